"""The algorithms against values computed by hand (the arithmetic is written out in each test),
and autograd checks where a stop-gradient decides the update."""

from __future__ import annotations

import math

import pytest

pytest.importorskip("torch")

import torch

from rockroll.train.advantages import chunk_returns, group_advantages, outcome_rewards
from rockroll.train.config import IPASettings
from rockroll.train.ipa import (
    chunk_keys,
    chunk_mismatch_mask,
    chunk_ratio,
    ipa_loss,
)
from rockroll.train.losses import (
    kl_k3,
    ppo_clip_loss,
    regularization,
    token_entropy,
    topr_loss,
)
from rockroll.train.reduce import aggregate, segment_mean

LN = math.log


def t(values: list, **kwargs) -> torch.Tensor:
    return torch.tensor(values, **kwargs)


def close(actual: torch.Tensor, expected: list | float, tol: float = 1e-5) -> None:
    expected_t = torch.as_tensor(expected, dtype=actual.dtype)
    assert torch.allclose(actual.detach(), expected_t, atol=tol), (actual, expected_t)


# --- GRPO advantages -------------------------------------------------------------------------


def test_group_advantages_normalise_within_each_group() -> None:
    # Group 7: rewards 1, 0, 0, 0 -> mean 0.25, centred 0.75, -0.25, -0.25, -0.25,
    # unbiased variance (0.75^2 + 3 * 0.25^2) / 3 = 0.25, std 0.5 -> 1.5, -0.5, -0.5, -0.5.
    # Group 3: rewards 2, 2 -> zero variance -> 0, 0. Group 9: one sample -> 0.
    rewards = t([1.0, 0.0, 2.0, 0.0, 2.0, 0.0, 5.0])
    groups = t([7, 7, 3, 7, 3, 7, 9])
    close(group_advantages(rewards, groups), [1.5, -0.5, 0, -0.5, 0, -0.5, 0], tol=1e-4)


def test_group_advantages_without_std_only_centre() -> None:
    rewards = t([1.0, 0.0, 0.0, 0.0, 3.0])
    groups = t([0, 0, 0, 0, 1])
    advantages = group_advantages(rewards, groups, scale_by_std=False)
    close(advantages, [0.75, -0.25, -0.25, -0.25, 0.0])


def test_group_advantages_reject_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="equal 1-D shapes"):
        group_advantages(t([1.0, 2.0]), t([0]))


# --- IPA returns and rewards (eq. 7) -------------------------------------------------------------


def test_failures_get_the_failure_reward() -> None:
    # Success is the verifier's pass, not R > 0: 0.5 without a pass is a failure.
    passed = t([True, False, False, False])
    close(outcome_rewards(t([1.0, 0.0, -0.5, 0.5]), passed, -1.0), [1.0, -1.0, -1.0, -1.0])
    with pytest.raises(ValueError, match="one shape"):
        outcome_rewards(t([1.0, 0.0]), t([True]), -1.0)


def test_chunk_returns_discount_from_the_outcome_chunk() -> None:
    # K = 3, gamma = 0.5, R = 2: ids 0, 1, 2 are k = 1, 2, 3 -> 0.5^2 * 2, 0.5 * 2, 2; id -1 -> 0.
    ids = t([0, 1, 2, -1])
    close(chunk_returns(ids, t(3), t(2.0), 0.5), [0.5, 1.0, 2.0, 0.0])
    # A single-chunk episode: its only chunk is the outcome chunk, G = R.
    close(chunk_returns(t([0]), t([1]), t([-1.0]), 0.9), [-1.0])


def test_chunk_returns_reject_bad_input() -> None:
    with pytest.raises(ValueError, match="gamma"):
        chunk_returns(t([0]), t([1]), t([1.0]), 0.0)
    with pytest.raises(ValueError, match="number of chunks"):
        chunk_returns(t([2]), t([2]), t([1.0]), 0.9)


# --- reductions ----------------------------------------------------------------------------------

LOSS = [[1.0, 2.0, 3.0], [4.0, 5.0, 0.0], [6.0, 7.0, 8.0]]
MASK = [[True, True, False], [True, False, False], [False, False, False]]
SEQ = [[0, 0, 0], [1, 1, -1], [2, 2, 2]]


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("token-mean", (1 + 2 + 4) / 3),
        # per sequence (1 + 2) / 2 = 1.5 and 4 / 1; sequence 2 has no unmasked token, left out
        ("seq-mean-token-mean", (1.5 + 4) / 2),
        ("seq-mean-token-sum", (3 + 4) / 2),
    ],
)
def test_aggregation_modes(mode: str, expected: float) -> None:
    close(aggregate(t(LOSS), t(MASK), t(SEQ), mode), expected)  # type: ignore[arg-type]


@pytest.mark.parametrize("mode", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum"])
def test_a_fully_masked_batch_gives_zero_and_no_nan(mode: str) -> None:
    loss = t([[1.0, float("inf")], [float("nan"), 2.0]], requires_grad=True)
    out = aggregate(loss, torch.zeros(2, 2, dtype=torch.bool), t([[0, 0], [1, 1]]), mode)  # type: ignore[arg-type]
    out.backward()
    assert out.item() == 0.0
    assert loss.grad is not None and torch.equal(loss.grad, torch.zeros(2, 2))


def test_unknown_aggregation_is_refused() -> None:
    with pytest.raises(ValueError, match="token-mean"):
        aggregate(t([1.0]), t([True]), t([0]), "sum")  # type: ignore[arg-type]


def test_segment_mean_ignores_negative_index_and_empty_segments() -> None:
    close(segment_mean(t([1.0, 3.0, 10.0, 5.0]), t([0, 0, -1, 2]), 3), [2.0, 0.0, 5.0])


# --- PPO-clip ------------------------------------------------------------------------------------


def test_ppo_clip_with_asymmetric_range() -> None:
    # eps_low 0.2, eps_high 0.3: clip range [0.8, 1.3]; per token -min(r A, clip(r) A):
    # r 1.5, A +1 -> -min(1.5, 1.3) = -1.3 (clipped by eps_high, not 1.2)
    # r 0.5, A +1 -> -min(0.5, 0.8) = -0.5
    # r 1.1, A -1 -> -min(-1.1, -1.1) = 1.1
    # r 0.5, A -1 -> -min(-0.5, -0.8) = 0.8 (clipped by eps_low)
    # r 1.4, A -1 -> -min(-1.4, -1.3) = 1.4 (a larger ratio is never clipped for A < 0)
    ratios = [1.5, 0.5, 1.1, 0.5, 1.4]
    logp = t([LN(r) for r in ratios], requires_grad=True)
    advantages = t([1.0, 1.0, -1.0, -1.0, -1.0])
    mask, seq = torch.ones(5, dtype=torch.bool), torch.zeros(5, dtype=torch.long)
    loss = ppo_clip_loss(logp, torch.zeros(5), advantages, mask, seq, eps_low=0.2, eps_high=0.3)
    close(loss, (-1.3 - 0.5 + 1.1 + 0.8 + 1.4) / 5)
    loss.backward()
    # d(-r A)/dlogp = -r A where the unclipped branch is taken, 0 where the clip is.
    close(logp.grad, [0.0, -0.5 / 5, 1.1 / 5, 0.0, 1.4 / 5])


# --- TOPR (the baseline, eq. 3-6) -------------------------------------------------------------


def _topr_inputs() -> dict:
    # Sequence 0 succeeds (R = 1); sequence 1 fails (R = 0 -> R_fail = -1). Sequence 1's
    # trajectory ratio: exp(mean(log .2 - log .4, log .4 - log .4)) = exp(log(.5) / 2) = sqrt(.5).
    return {
        "logp": t([LN(0.5), LN(0.25), LN(0.2), LN(0.4)], requires_grad=True),
        "old_logp": t([LN(0.5), LN(0.5), LN(0.4), LN(0.4)]),
        "mask": torch.ones(4, dtype=torch.bool),
        "seq_index": t([0, 0, 1, 1]),
        "rewards": t([1.0, 0.0]),
        "success": t([True, False]),
    }


def test_topr_splits_successes_from_failures() -> None:
    inputs = _topr_inputs()
    s = math.sqrt(0.5)
    loss = topr_loss(**inputs)
    # success tokens -1 * log p; failure tokens -sg(s) * (-1) * log p
    close(loss, (-LN(0.5) - LN(0.25) + s * LN(0.2) + s * LN(0.4)) / 4)
    loss.backward()
    # The ratio is a constant: each failure token's gradient is exactly s / 4. Were it not
    # stopped, d rho / d logp = rho / 2 would add s / 2 * (log .2 + log .4) / 4 to each.
    close(inputs["logp"].grad, [-1 / 4, -1 / 4, s / 4, s / 4])


def test_topr_truncates_the_ratio_at_one() -> None:
    # A failure whose policy already gained probability (ratio 2) is pushed down at weight 1.
    logp = t([LN(0.8)], requires_grad=True)
    loss = topr_loss(logp, t([LN(0.4)]), t([True]), t([0]), t([0.0]), success=t([False]))
    close(loss, LN(0.8))


def test_topr_token_mask_drops_tokens_the_engine_disagrees_on() -> None:
    inputs = _topr_inputs()
    # pi_old / mu: 1, 1, 6 (> H = 5: dropped), 1
    mu = inputs["old_logp"] - t([0.0, 0.0, LN(6), 0.0])
    s = math.sqrt(0.5)
    loss = topr_loss(**inputs, mu_logp=mu, threshold=5.0)
    close(loss, (-LN(0.5) - LN(0.25) + s * LN(0.4)) / 3)


# --- KL and entropy ------------------------------------------------------------------------------


def test_kl_k3_by_hand() -> None:
    # logp = log .5, ref = log .25: delta = log .5 -> .5 - log .5 - 1 = 0.19315
    close(kl_k3(t([LN(0.5), LN(0.3)]), t([LN(0.25), LN(0.3)])), [0.5 - LN(0.5) - 1, 0.0])


def test_entropy_of_uniform_and_peaked_distributions() -> None:
    close(token_entropy(t([[0.0, 0.0, 0.0, 0.0], [100.0, 0.0, 0.0, 0.0]])), [LN(4), 0.0])


def test_regularization_adds_kl_and_subtracts_entropy() -> None:
    mask, seq = t([True, True, False]), t([0, 0, 0])
    logp, ref = t([LN(0.5), LN(0.5), LN(0.5)]), t([LN(0.25), LN(0.5), LN(0.01)])
    entropy = t([1.0, 3.0, 100.0])
    kl = (0.5 - LN(0.5) - 1 + 0.0) / 2  # the third token is masked
    out = regularization(
        mask, seq, logp=logp, ref_logp=ref, kl_coef=0.1, entropy=entropy, entropy_coef=0.01
    )
    close(out, 0.1 * kl - 0.01 * (1.0 + 3.0) / 2)
    close(regularization(mask, seq, logp=logp, ref_logp=ref), 0.0)


# --- IPA (eq. 7-9) ------------------------------------------------------------------------------
# Two padded sequences, gamma = 0.5, all logp = -1 (so each token's loss is its weight w * G):
#   sequence 0 succeeds (R = 1), K = 2: tokens  p c0 c0 e c1 | pad pad
#   sequence 1 fails (R_fail = -1), K = 3:      p c0 e c1 c1 e c2
# Returns G_k = gamma^(K-k) R: seq 0: c0 0.5, c1 1; seq 1: c0 -0.25, c1 -0.5, c2 -1.
# Token log-ratios log pi_theta - log pi_old in sequence 1: c0 log 2 (rho 2, clipped to 1),
# c1 log .25 and 0 (rho = geometric mean sqrt(.25 * 1) = .5; the arithmetic mean would be .625),
# c2 log .8 (rho .8). Per-token loss -w G log pi = w G:
#   seq 0: .5 .5 1 (no ratio on successes); seq 1: -.25, -.25 -.25 (w .5 * G -.5), -.8.

CHUNKS = t([[-1, 0, 0, -1, 1, -1, -1], [-1, 0, -1, 1, 1, -1, 2]])
SEQS = t([[0, 0, 0, 0, 0, -1, -1], [1, 1, 1, 1, 1, 1, 1]])
MASK_IPA = CHUNKS >= 0
REWARDS, NUM_CHUNKS = t([1.0, 0.0]), t([2, 3])
PASSED = t([True, False])
DELTA = t([[0.0] * 7, [0.0, LN(2), 0.0, LN(0.25), 0.0, 0.0, LN(0.8)]])
CONFIG = IPASettings(gamma=0.5, fail_reward=-1.0)


def _ipa(logp: torch.Tensor | None = None, **kwargs):
    logp = logp if logp is not None else torch.full((2, 7), -1.0, requires_grad=True)
    old = logp.detach() - DELTA
    kwargs.setdefault("config", CONFIG)
    kwargs.setdefault("success", PASSED)
    out = ipa_loss(logp, old, MASK_IPA, CHUNKS, SEQS, REWARDS, NUM_CHUNKS, **kwargs)
    return logp, out


def test_ipa_loss_by_hand() -> None:
    _, out = _ipa()
    close(out.loss, (0.5 + 0.5 + 1 - 0.25 - 0.25 - 0.25 - 0.8) / 7)
    # chunks in key order: seq 0 c0 c1, seq 1 c0 c1 c2
    close(out.chunk_ratio, [1.0, 1.0, 2.0, 0.5, 0.8])
    close(out.chunk_return, [0.5, 1.0, -0.25, -0.5, -1.0])
    assert out.chunk_kept.all()


def test_ipa_ratio_carries_no_gradient() -> None:
    logp, out = _ipa()
    out.loss.backward()
    # d/d log pi of -w G log pi is -w G with w a constant; were rho differentiated, chunk c1's
    # tokens would also get -G * d rho / d log pi * sum(log pi) != 0.
    expected = torch.zeros(2, 7)
    expected[0, [1, 2, 4]] = t([-0.5, -0.5, -1.0])
    expected[1, [1, 3, 4, 6]] = t([0.25, 0.25, 0.25, 0.8])
    close(logp.grad, expected / 7)


def test_ipa_mismatch_mask_drops_whole_chunks() -> None:
    # log pi_old - log mu per token; chunk ratio = exp(mean) (geometric mean):
    #   seq 0 c0: 8 and 2 -> 4 (kept whole, though one token alone exceeds H = 5); c1: 1 kept
    #   seq 1 c0: 0.1 (< 1/H: dropped); c1: 1 kept; c2: 6 (> H: dropped)
    log_mismatch = torch.zeros(2, 7)
    log_mismatch[0, [1, 2]] = t([LN(8), LN(2)])
    log_mismatch[1, 1], log_mismatch[1, 6] = LN(0.1), LN(6)
    logp = torch.full((2, 7), -1.0, requires_grad=True)
    mu = (logp.detach() - DELTA) - log_mismatch
    _, out = _ipa(logp, mu_logp=mu)
    assert out.chunk_kept.tolist() == [True, True, False, True, False]
    close(out.loss, (0.5 + 0.5 + 1 - 0.25 - 0.25) / 5)


def test_chunk_mismatch_mask_is_two_sided() -> None:
    # pi_old / mu per chunk: 4.9 and 0.21 lie within [1/5, 5]; 0.19 and 5.5 do not.
    log_ratio = t([LN(4.9), LN(0.21), LN(0.19), LN(5.5)])
    mask = chunk_mismatch_mask(log_ratio, torch.zeros(4), t([0, 1, 2, 3]), 4, 5.0)
    assert mask.tolist() == [True, True, False, False]
    with pytest.raises(ValueError, match="H must be"):
        chunk_mismatch_mask(torch.zeros(1), torch.zeros(1), t([0]), 1, 0.5)


def test_chunk_ratio_is_the_geometric_mean() -> None:
    keys = chunk_keys(t([0, 0, -1, 1]), t([0, 0, 0, 0]), 2)
    assert keys.tolist() == [0, 0, -1, 1]
    close(chunk_ratio(t([LN(4), LN(1), 9.0, LN(3)]), torch.zeros(4), keys, 2), [2.0, 3.0])


def test_ipa_ratio_is_exactly_one_at_staleness_zero() -> None:
    logp = torch.randn(2, 7).clamp(max=-0.1).requires_grad_()
    out = ipa_loss(
        logp, logp.detach().clone(), MASK_IPA, CHUNKS, SEQS, REWARDS, NUM_CHUNKS, success=PASSED
    )
    assert torch.equal(out.chunk_ratio, torch.ones(5))


def test_ipa_all_chunks_masked_gives_zero_loss_and_gradient() -> None:
    logp = torch.full((2, 7), -1.0, requires_grad=True)
    mu = logp.detach() - DELTA - LN(10)  # every chunk's pi_old / mu is 10 > H
    _, out = _ipa(logp, mu_logp=mu)
    out.loss.backward()
    assert out.loss.item() == 0.0 and not out.chunk_kept.any()
    assert logp.grad is not None and torch.equal(logp.grad, torch.zeros(2, 7))


def test_ipa_single_chunk_episodes_in_all_success_and_all_failure_groups() -> None:
    # Three one-chunk episodes of two tokens each, logp -1; K = 1 so G = R (or R_fail).
    chunks, seqs = t([[0, 0], [0, 0], [0, 0]]), t([[0, 0], [1, 1], [2, 2]])
    mask, counts = chunks >= 0, t([1, 1, 1])
    logp = torch.full((3, 2), -1.0)
    old = logp - LN(2)  # every ratio 2: clipped to 1 on failures, unused on successes
    passed = t([True, True, True])
    success = ipa_loss(logp, old, mask, chunks, seqs, t([1.0, 2.0, 1.0]), counts, success=passed)
    close(success.loss, (1 + 1 + 2 + 2 + 1 + 1) / 6)
    failure = ipa_loss(logp, old, mask, chunks, seqs, t([0.0, 0.0, 0.0]), counts, success=~passed)
    close(failure.loss, -1.0)
    close(failure.chunk_return, [-1.0, -1.0, -1.0])


def test_ipa_aggregation_per_sequence() -> None:
    # seq 0 mean (.5 + .5 + 1) / 3; seq 1 mean (-.25 * 3 - .8) / 4
    config = IPASettings(gamma=0.5)
    _, out = _ipa(config=config, aggregation="seq-mean-token-mean")
    close(out.loss, ((0.5 + 0.5 + 1) / 3 + (-0.75 - 0.8) / 4) / 2)


def test_ipa_refuses_chunk_ids_beyond_the_episode() -> None:
    with pytest.raises(ValueError, match="number of chunks"):
        ipa_loss(
            torch.zeros(1, 2), torch.zeros(1, 2), t([[False, True]]), t([[-1, 1]]), t([[0, 0]]),
            t([1.0]), t([1]), success=t([True]),
        )  # fmt: skip
