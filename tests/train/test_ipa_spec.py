"""IPA exactly as docs/ipa.md specifies it, where an implementation is easiest to get wrong: what
counts as a success, the temperature all three policies share, crucial forks between anchors
that are not adjacent, eq. 10's weighting and coefficients, and the stale (pi_old = mu) path."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from rockroll.agent.trajectory import AtifMetrics, Trajectory
from rockroll.models.local import LocalModel, tiny_random_model
from rockroll.models.messages import Message
from rockroll.tasks.suites import load_suite
from rockroll.train.advantages import outcome_rewards
from rockroll.train.chunks import ChunkedSequence, chunk_trajectory
from rockroll.train.config import IPASettings, ResampleConfig, RolloutConfig, parse_config
from rockroll.train.episodes import Episode
from rockroll.train.expert import Expert
from rockroll.train.ipa import ipa_loss
from rockroll.train.losses import ppo_clip_loss, topr_loss
from rockroll.train.resample import Fork, Resampler
from rockroll.train.update import (
    Tokens,
    backward_through_model,
    imitation_grad,
    imitation_loss,
    imitation_weights,
    rl_loss,
    score_tokens,
)

LN = math.log
PAD = 0


def t(values: list | float, **kwargs) -> torch.Tensor:  # type: ignore[type-arg]
    return torch.tensor(values, **kwargs)


def _cfg(**changes: object):  # type: ignore[no-untyped-def]
    return parse_config({"model": "local:tiny-random", "tasks": "term:count-files", **changes})


# --- A1: one definition of success: the verifier's `passed` ---------------------------------------


def test_partial_credit_without_a_pass_takes_the_failure_branch() -> None:
    """A close-but-wrong answer (R = 0.923, passed = False) is pushed down with R_fail, not
    reinforced as a success; a pass with R = 1 is reinforced."""
    logp = torch.full((1, 4), -1.0, requires_grad=True)
    old = logp.detach() - t([[LN(2), LN(2), 0.0, 0.0]])  # rho 2 (sequence 0), 1 (sequence 1)
    chunks, seqs = t([[0, 0, 0, 0]]), t([[0, 0, 1, 1]])
    out = ipa_loss(
        logp,
        old,
        chunks >= 0,
        chunks,
        seqs,
        t([0.923, 1.0]),
        t([1, 1]),
        success=t([False, True]),
        config=IPASettings(gamma=0.5, fail_reward=-1.0),
    )
    close(out.chunk_return, [-1.0, 1.0])
    out.loss.backward()
    assert logp.grad is not None
    # d(-w G log pi)/d log pi = -w G: positive (pushed down) for the partial-credit failure, whose
    # ratio 2 is truncated to 1; negative for the success.
    close(logp.grad, [[0.25, 0.25, -0.25, -0.25]])
    close(outcome_rewards(t([0.923, 0.01, 1.0, 0.0]), t([False, False, True, False]), -1.0),
          [-1.0, -1.0, 1.0, -1.0])  # fmt: skip
    topr = topr_loss(
        logp.detach(), old, chunks >= 0, seqs, t([0.923, 1.0]), success=t([False, True])
    )
    # -w R log pi per token: the failure's two tokens -(1)(-1)(-1) = -1, the success's +1.
    close(topr, 0.0)


def _one_turn_trajectory() -> Trajectory:
    traj = Trajectory()
    traj.add("user", "task")
    metrics = AtifMetrics(prompt_token_ids=[5, 6], completion_token_ids=[7, 8], logprobs=[-1.0] * 2)
    traj.add("agent", "reply", metrics=metrics)
    return traj


def test_the_trainer_the_resampler_and_the_metrics_agree_on_what_succeeded(tmp_path: Path) -> None:
    """An episode with partial credit and no pass: its training sequence says failed, the
    resampler counts a failure at its start, and the loss pushes it down."""
    [seq] = chunk_trajectory(_one_turn_trajectory(), 0.923, passed=False)
    assert seq.passed is False and seq.reward == 0.923
    tokens = Tokens.of([seq], [0])
    assert tokens.success.tolist() == [False]
    logp = torch.full((2,), -1.0, requires_grad=True)
    loss, _ = rl_loss(_cfg(), logp, logp.detach(), tokens)
    loss.backward()
    assert logp.grad is not None and bool((logp.grad > 0).all())  # pushed down

    [task] = load_suite("term:count-files?seed=0&size=1")
    r = Resampler(ResampleConfig(enabled=True, window=4), RolloutConfig(), [task], tmp_path)
    episode = Episode(task, 0, _one_turn_trajectory(), 0.923, False, "submitted", 1, 0.1)
    r.observe([episode] * 4, step=1)
    assert r.rate(task.id, 0) == 0.0


# --- A2: pi_old, pi_theta and mu are the same (sampling) distribution -----------------------------


def _peaked(seed: int = 0) -> LocalModel:
    """A tiny model whose next-token distributions are far from uniform, so that a wrong
    temperature shows in every logprob."""
    policy = tiny_random_model(seed=seed)
    with torch.no_grad():
        policy.model.model.norm.weight.mul_(40.0)
    return policy


@pytest.mark.parametrize("temperature", [0.5, 1.7])
def test_pi_old_over_mu_is_one_at_any_temperature_and_zero_staleness(temperature: float) -> None:
    policy = _peaked()
    c = policy.complete(
        [Message(role="user", content="list the files")],
        None,
        max_tokens=12,
        temperature=temperature,
        seed=3,
    )
    seq = ChunkedSequence(reward=0.0, passed=False, num_chunks=1)
    seq.add_environment(c.prompt_token_ids)
    seq.add_turn(0, c.token_ids, c.logprobs)
    mu = t(seq.mu_logprobs)[t(seq.response_mask).bool()]
    old = score_tokens(
        policy.model, [seq], PAD, amp=False, micro_tokens=2048, temperature=temperature
    )
    assert torch.allclose(old, mu, atol=1e-4), (old - mu).abs().max()
    # The test can fail: the raw logits' distribution is far from the sampling one here.
    raw = score_tokens(policy.model, [seq], PAD, amp=False, micro_tokens=2048)
    assert float((raw - mu).abs().max()) > 0.05
    # Through the whole loss: every chunk kept, every ratio 1.
    tokens = Tokens.of([seq], [0])
    cfg = _cfg(rollout={"temperature": temperature})
    _, stats = rl_loss(cfg, old.clone().requires_grad_(), old, tokens)
    assert stats["masked_chunk_fraction"] == 0.0
    assert stats["chunk_ratio_mean"] == pytest.approx(1.0, abs=1e-6)
    assert float(torch.exp(old - mu).max()) == pytest.approx(1.0, abs=1e-3)


def test_the_update_scores_at_the_rollout_temperature() -> None:
    """The gradient the update takes is that of log softmax(logits / T)."""
    policy = _peaked(seed=1)
    c = policy.complete(
        [Message(role="user", content="hi")], None, max_tokens=6, temperature=0.5, seed=1
    )
    seq = ChunkedSequence(reward=1.0, passed=True, num_chunks=1)
    seq.add_environment(c.prompt_token_ids)
    seq.add_turn(0, c.token_ids, c.logprobs)
    model = policy.model
    grad = -torch.ones(len(c.token_ids))
    model.zero_grad()
    backward_through_model(
        model, [seq], PAD, grad, None, amp=False, micro_tokens=2048, temperature=0.5
    )
    got = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    model.zero_grad()
    ids = t([seq.input_ids])
    at = t([i for i, m in enumerate(seq.response_mask) if m])
    logits = model(input_ids=ids).logits[0, at - 1].float()
    logp = torch.log_softmax(logits / 0.5, -1).gather(1, ids[0, at].unsqueeze(1)).squeeze(1)
    (-logp.sum()).backward()
    want = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert torch.allclose(g, w, atol=1e-5, rtol=1e-4)


# --- A3: crucial forks between anchors that are not adjacent -------------------------------------


def _resampler(tmp_path: Path, turns: int) -> tuple[Resampler, object]:
    [task] = load_suite("term:count-files?seed=0&size=1")
    r = Resampler(
        ResampleConfig(enabled=True, window=4, init="replay", sources=["oracle"]),
        RolloutConfig(),
        [task],
        tmp_path,
    )
    r.add(Expert(task.id, [f"turn {i}" for i in range(turns)], "oracle", 0))
    return r, task


def _observe(r: Resampler, task, rates: dict[int, float]) -> None:  # type: ignore[no-untyped-def]
    for start, rate in rates.items():
        wins = round(rate * 4)
        episodes = [
            Episode(task, 0, Trajectory(), float(i < wins), i < wins, "submitted", 1, 0.1,
                    start=start)
            for i in range(4)
        ]  # fmt: skip
        r.observe(episodes, step=1)


@pytest.mark.parametrize(
    ("turns", "anchors", "rates", "fork"),
    [
        (6, [0, 2, 5], {0: 0.0, 2: 0.0, 5: 1.0}, Fork(before=2, after=5)),
        (5, [0, 2, 4], {0: 0.0, 2: 0.0, 4: 1.0}, Fork(before=2, after=4)),
        (8, [0, 4, 7], {0: 0.0, 4: 1.0, 7: 1.0}, Fork(before=0, after=4)),
    ],
)
def test_a_crucial_fork_is_found_between_anchors_that_are_not_adjacent(
    tmp_path: Path, turns: int, anchors: list[int], rates: dict[int, float], fork: Fork
) -> None:
    r, task = _resampler(tmp_path, turns)
    expert = r.experts[task.id]  # type: ignore[attr-defined]
    assert r.starts(task.id, expert) == anchors  # type: ignore[attr-defined]
    _observe(r, task, rates)
    assert r.crucial_forks() == {task.id: fork}  # type: ignore[attr-defined]
    assert r.stuck(task.id, fork)  # type: ignore[attr-defined]
    # The crucial turn lies somewhere in before..after-1; imitating up to after-1 covers it.
    assert fork.turn == fork.after - 1
    # The gap is sampled next to narrow it down.
    middle = (fork.before + fork.after) // 2
    assert middle in r.starts(task.id, expert)  # type: ignore[attr-defined]


def test_sampling_the_gap_narrows_the_fork(tmp_path: Path) -> None:
    r, task = _resampler(tmp_path, 6)
    _observe(r, task, {0: 0.0, 2: 0.0, 5: 1.0})
    _observe(r, task, {3: 1.0})  # the middle of 2..5 already succeeds
    assert r.crucial_forks() == {task.id: Fork(before=2, after=3)}  # type: ignore[attr-defined]
    assert r.crucial_forks()[task.id].turn == 2  # type: ignore[attr-defined]
    assert r.starts(task.id, r.experts[task.id]) == [0, 2, 5]  # adjacent: nothing left to sample  # type: ignore[attr-defined]


def test_no_fork_without_a_jump_of_crucial_gap(tmp_path: Path) -> None:
    r, task = _resampler(tmp_path, 6)
    _observe(r, task, {0: 0.0, 2: 0.25, 5: 0.5})
    assert r.crucial_forks() == {}  # type: ignore[attr-defined]


# --- A4: eq. 10, weighted by the expert's chunk returns; lambda_RL on every step ---------------


def _expert_sequence(chunk_tokens: list[list[int]], reward: float = 1.0) -> ChunkedSequence:
    seq = ChunkedSequence(reward=reward, passed=True, num_chunks=len(chunk_tokens))
    seq.add_environment([11, 12, 13, 14])
    for k, ids in enumerate(chunk_tokens):
        seq.add_turn(k, ids, [-1.0] * len(ids))
        seq.add_environment([20 + k, 21 + k])
    return seq


def _il_param_grads(
    model: torch.nn.Module, seq: ChunkedSequence, upto: int, coef: float, gamma: float
) -> list[torch.Tensor]:
    masked = set(range(upto + 1, seq.num_chunks))
    tokens = Tokens.of([seq], [0], [masked])
    weights = imitation_weights(tokens, gamma, "return")
    model.zero_grad()
    backward_through_model(
        model, [seq], PAD, coef * imitation_grad(tokens, weights), None, amp=False,
        micro_tokens=2048,
    )  # fmt: skip
    return [
        p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in model.parameters()
    ]


def test_the_imitation_gradient_is_lambda_il_times_the_return_weighted_nll() -> None:
    model = tiny_random_model(seed=2).model
    chunks = [[101, 102, 103], [201, 202], [301, 302, 303, 304]]
    seq = _expert_sequence(chunks, reward=1.0)
    gamma, coef, f = 0.5, 0.3, 1
    got = _il_param_grads(model, seq, f, coef, gamma)

    # By hand: chunks 0..f, G*_k = gamma^(K* - k) R* with k = 1..K* (K* = 3): 0.25, 0.5, (1.0).
    model.zero_grad()
    ids = t([seq.input_ids])
    logp_all = torch.log_softmax(model(input_ids=ids).logits[0].float(), -1)
    total, count = torch.zeros(()), 0
    for pos, chunk in enumerate(seq.chunk_ids):
        if 0 <= chunk <= f:
            g = gamma ** (len(chunks) - 1 - chunk) * 1.0
            total = total - g * logp_all[pos - 1, seq.input_ids[pos]]
            count += 1
    (coef * total / count).backward()
    want = [
        p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in model.parameters()
    ]
    for g, w in zip(got, want, strict=True):
        assert torch.allclose(g, w, atol=1e-5, rtol=1e-4)

    # f included: imitating only up to f - 1 gives another gradient.
    before = _il_param_grads(model, seq, f - 1, coef, gamma)
    assert any(not torch.allclose(a, b) for a, b in zip(got, before, strict=True))
    # f + 1 excluded: other tokens in chunk f + 1 change nothing.
    other = _expert_sequence([chunks[0], chunks[1], [401, 402, 403, 404]])
    again = _il_param_grads(model, other, f, coef, gamma)
    for a, b in zip(got, again, strict=True):
        assert torch.allclose(a, b, atol=1e-7)
    # lambda_IL = 0: no gradient at all.
    assert all(float(g.abs().max()) == 0.0 for g in _il_param_grads(model, seq, f, 0.0, gamma))


def test_imitation_weights_and_loss_by_hand() -> None:
    seq = _expert_sequence([[101, 102], [201], [301]], reward=1.0)
    tokens = Tokens.of([seq], [0], [{2}])
    close(imitation_weights(tokens, 0.5, "return"), [0.25, 0.25, 0.5, 0.0])
    close(imitation_weights(tokens, 0.5, "uniform"), [1.0, 1.0, 1.0, 0.0])
    logp = t([LN(0.5), LN(0.5), LN(0.25), LN(0.1)])
    weights = imitation_weights(tokens, 0.5, "return")
    close(imitation_loss(logp, tokens, weights), -(0.25 * LN(0.5) * 2 + 0.5 * LN(0.25)) / 3)
    close(imitation_grad(tokens, weights), [-0.25 / 3, -0.25 / 3, -0.5 / 3, 0.0])


def test_lambda_rl_scales_the_rl_loss_on_every_step_with_or_without_imitations() -> None:
    seq = _expert_sequence([[101, 102], [201]], reward=0.0)
    seq.passed = False
    tokens = Tokens.of([seq], [0])
    logp = t([-1.0, -2.0, -0.5])
    plain, _ = rl_loss(_cfg(), logp, logp, tokens)
    half, _ = rl_loss(_cfg(resample={"enabled": True, "rl_coef": 0.5}), logp, logp, tokens)
    close(half, 0.5 * float(plain))
    assert float(plain) != 0.0


def test_il_weighting_is_a_config_choice() -> None:
    assert _cfg().resample.il_weighting == "return"
    assert _cfg(resample={"il_weighting": "uniform"}).resample.il_weighting == "uniform"


# --- the stale path and the clamps ---------------------------------------------------------------


def test_the_stale_path_end_to_end() -> None:
    """pi_old = mu (the sampling weights are gone): in a failed episode, a chunk pi_theta
    finds more likely than mu is pushed down at weight 1, one it finds less likely at
    rho = pi_theta / mu < 1; the mismatch mask compares nothing and keeps both."""
    seq = _expert_sequence([[101, 102], [201, 202]], reward=0.0)
    seq.passed, seq.old_is_mu = False, True
    seq.mu_logprobs = [
        {0: -1.0, 1: -2.0}.get(c, 0.0) if m else 0.0
        for c, m in zip(seq.chunk_ids, seq.response_mask, strict=True)
    ]
    tokens = Tokens.of([seq], [0])
    assert tokens.old_is_mu.all()
    # chunk 0: log pi_theta - log mu = +0.5 (rho 1.65 -> 1); chunk 1: -0.7 (rho 0.497)
    logp = t([-0.5, -0.5, -2.7, -2.7], requires_grad=True)
    recomputed = t([-9.0, -9.0, -9.0, -9.0])  # would drop every chunk were it used
    cfg = _cfg(ipa={"gamma": 0.5})
    loss, stats = rl_loss(cfg, logp, recomputed, tokens)
    loss.backward()
    rho = math.exp(-0.7)
    # G: chunk 0 = 0.5 * -1, chunk 1 = -1; d/dlogp of -w G logp = -w G, token-mean over 4
    close(logp.grad, [0.5 / 4, 0.5 / 4, rho / 4, rho / 4])  # type: ignore[arg-type]
    assert stats["masked_chunk_fraction"] == 0.0


def test_a_low_ratio_pins_the_lower_clamp() -> None:
    # PPO-clip, eps_low = 0.5: a ratio of 0.4 with A < 0 takes the clamp (no gradient), with
    # A > 0 the unclipped branch.
    logp = t([LN(0.4), LN(0.4)], requires_grad=True)
    loss = ppo_clip_loss(
        logp, torch.zeros(2), t([-1.0, 1.0]), t([True, True]), t([0, 0]), eps_low=0.5
    )
    close(loss, (0.5 - 0.4) / 2)
    loss.backward()
    close(logp.grad, [0.0, -0.4 / 2])  # type: ignore[arg-type]
    # IPA's chunk mismatch mask, H = 2: pi_old / mu of 0.45 is below 1/H and the chunk is dropped.
    chunks, seqs = t([[0, 0, 1]]), t([[0, 0, 0]])
    out = ipa_loss(
        torch.full((1, 3), -1.0),
        torch.full((1, 3), -1.0),
        chunks >= 0,
        chunks,
        seqs,
        t([1.0]),
        t([2]),
        success=t([True]),
        mu_logp=torch.full((1, 3), -1.0) - t([[LN(0.45), LN(0.45), 0.0]]),
        config=IPASettings(mismatch_threshold=2.0),
    )
    assert out.chunk_kept.tolist() == [False, True]
    # And the truncated ratio of a failure below 1 is used as it is (0.4), never raised to 1.
    failed = ipa_loss(
        t([[LN(0.4)]], requires_grad=True),
        t([[0.0]]),
        t([[True]]),
        t([[0]]),
        t([[0]]),
        t([0.0]),
        t([1]),
        success=t([False]),
    )
    close(failed.chunk_ratio, [0.4])


def close(actual: torch.Tensor | float, expected: list | float, tol: float = 1e-5) -> None:
    actual = actual if isinstance(actual, torch.Tensor) else torch.tensor(actual)
    want = torch.tensor(expected, dtype=actual.dtype)
    assert torch.allclose(actual.detach(), want, atol=tol), (actual, want)
