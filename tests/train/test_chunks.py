"""Trajectories to token sequences: real runs of a tiny random model through the harness in a
real sandbox, and hand-built trajectories for each way a prompt can break the sequence."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

import torch

from rockroll import Sandbox
from rockroll.agent.loop import AgentConfig, AgentLoop
from rockroll.agent.trajectory import AtifMetrics, Trajectory
from rockroll.models.local import LocalModel, tiny_random_model
from rockroll.train.chunks import ChunkedSequence, ChunkError, chunk_trajectory

SEEDS = (2, 3)  # per kind; before exact continuation, seed 2 broke and seed 3 did not
IM_END = "<|im_end|>"


@dataclass
class Recorded:
    name: str
    model: LocalModel
    trajectory: Trajectory


def _stopping_model() -> LocalModel:
    """The tiny model with a bias towards <|im_end|>, so turns end on the stop token the way a
    trained model's do instead of running into max_tokens_per_turn."""
    model = tiny_random_model(seed=0)
    head = model.model.lm_head
    biased = torch.nn.Linear(head.in_features, head.out_features, bias=True)
    with torch.no_grad():
        biased.weight.copy_(head.weight)
        biased.bias.zero_()
        biased.bias[model.tokenizer.convert_tokens_to_ids(IM_END)] = 9.0
    model.model.lm_head = biased
    return model


@pytest.fixture(scope="module")
def recorded(base_image: str) -> list[Recorded]:
    runs = []
    for kind, model in (("truncated", tiny_random_model(seed=0)), ("stops", _stopping_model())):
        for seed in SEEDS:
            config = AgentConfig(
                context_mode="linear",
                max_turns=3,
                max_tokens_per_turn=16,
                temperature=1.0,
                seed=seed,
            )
            loop = AgentLoop(model, config=config)
            with Sandbox.create(base_image, memory="512m", pids=256) as sandbox:
                result = loop.run("list the files in /root", sandbox)
            assert result.turns == 3, result.error
            runs.append(Recorded(f"{kind}/seed {seed}", model, result.trajectory))
    return runs


def _turns(trajectory: Trajectory) -> list[AtifMetrics]:
    return [s.metrics for s in trajectory.steps if s.source == "agent" and s.metrics]


def _check_sequence(sequence: ChunkedSequence, turns: list[AtifMetrics]) -> None:
    """Every turn in `sequence` saw a prefix of it and generated the tokens at its masked
    positions; nothing else is masked; the sequence ends with its last completion."""
    chunks = sorted({c for c in sequence.chunk_ids if c >= 0})
    spans: list[int] = []
    for k in chunks:
        prompt, completion = turns[k].prompt_token_ids or [], turns[k].completion_token_ids or []
        assert sequence.input_ids[: len(prompt)] == prompt, f"turn {k}'s prompt is not a prefix"
        span = list(range(len(prompt), len(prompt) + len(completion)))
        assert [sequence.input_ids[i] for i in span] == completion
        assert [sequence.chunk_ids[i] for i in span] == [k] * len(completion)
        assert [sequence.mu_logprobs[i] for i in span] == turns[k].logprobs
        spans += span
    assert [i for i, m in enumerate(sequence.response_mask) if m] == spans
    assert all(sequence.mu_logprobs[i] == 0.0 for i in range(len(sequence)) if i not in spans)
    assert all(sequence.chunk_ids[i] == -1 for i in range(len(sequence)) if i not in spans)
    if spans:
        assert len(sequence) == spans[-1] + 1


@pytest.mark.slow
def test_sequences_reproduce_what_the_model_saw_at_every_turn(recorded: list[Recorded]) -> None:
    for run in recorded:
        turns = _turns(run.trajectory)
        sequences = chunk_trajectory(run.trajectory, 1.0, passed=True, on_break="split")
        for sequence in sequences:
            _check_sequence(sequence, turns)
            assert sequence.num_chunks == len(turns) and sequence.reward == 1.0
            assert sequence.episode_id == run.trajectory.session_id
        covered = [c for s in sequences for c in sorted(set(s.chunk_ids) - {-1})]
        assert covered == list(range(len(turns))), run.name


@pytest.mark.slow
def test_mu_is_what_the_model_assigns_the_sequence(recorded: list[Recorded]) -> None:
    """One teacher-forced forward over a whole sequence gives, at every masked position, the
    logprob the token was sampled with: the sequence is the model's own context, token for token."""
    for run in recorded:
        for sequence in chunk_trajectory(run.trajectory, 0.0, passed=False, on_break="split"):
            at = torch.tensor([i for i, m in enumerate(sequence.response_mask) if m])
            with torch.no_grad():
                body = run.model.model.model(input_ids=torch.tensor([sequence.input_ids]))
                logits = run.model.model.lm_head(body.last_hidden_state[0, at - 1])
            logp = torch.log_softmax(logits.float(), dim=-1)  # temperature 1.0
            ids = torch.tensor(sequence.input_ids)[at]
            forced = logp.gather(1, ids.unsqueeze(1)).squeeze(1)
            mu = torch.tensor(sequence.mu_logprobs)[at]
            assert torch.allclose(forced, mu, atol=1e-4), (run.name, (forced - mu).abs().max())


@pytest.mark.slow
def test_harness_runs_are_one_unbroken_sequence(recorded: list[Recorded]) -> None:
    """The local backend continues each prompt from the exact ids it sampled, so even a random
    model's odd token strings (which a decode and re-encode would split differently) stay one
    sequence; breaks are covered by the hand-built trajectories below."""
    for run in recorded:
        assert len(chunk_trajectory(run.trajectory, 1.0, passed=True)) == 1, run.name


@pytest.mark.slow
def test_template_glue_after_a_completion_is_not_generated(recorded: list[Recorded]) -> None:
    """A completion that ended on <|im_end|> is followed by "\\n" (the template's own
    <|im_end|> is the sampled one); one cut off by the token limit by the template's
    <|im_end|>, which the model did not generate and is not trained on."""
    tokenizer = recorded[0].model.tokenizer
    im_end, newline = tokenizer.convert_tokens_to_ids(IM_END), tokenizer.encode("\n")[0]
    seen = set()
    for run in recorded:
        for sequence in chunk_trajectory(run.trajectory, 1.0, passed=True, on_break="split"):
            ends = [i for i in range(len(sequence) - 1) if sequence.chunk_ids[i] >= 0]
            ends = [i for i in ends if sequence.chunk_ids[i + 1] != sequence.chunk_ids[i]]
            for i in ends:
                stopped = sequence.input_ids[i] == im_end
                assert sequence.input_ids[i + 1] == (newline if stopped else im_end)
                assert sequence.response_mask[i + 1] == 0
                seen.add(stopped)
    assert seen == {True, False}


# --- hand-built trajectories ---------------------------------------------------------------------


def _trajectory(*steps: tuple) -> Trajectory:
    """Steps as (prompt, completion) for agent turns (logprob -0.1 per token), or an event."""
    traj = Trajectory()
    traj.add("system", "system prompt")
    traj.add("user", "task")
    for step in steps:
        if isinstance(step, dict):
            traj.add("system", f"context management: {step['type']}", extra={"event": step})
            continue
        prompt, completion = step
        metrics = AtifMetrics(
            prompt_token_ids=prompt,
            completion_token_ids=completion,
            logprobs=[-0.1] * len(completion),
        )
        traj.add("agent", "reply", metrics=metrics)
    return traj


def test_a_linear_trajectory_is_one_sequence() -> None:
    traj = _trajectory(([1, 2], [3, 4]), ([1, 2, 3, 4, 5], []), ([1, 2, 3, 4, 5, 6], [7]))
    [sequence] = chunk_trajectory(traj, 0.5, passed=False)
    assert sequence.input_ids == [1, 2, 3, 4, 5, 6, 7]
    assert sequence.response_mask == [0, 0, 1, 1, 0, 0, 1]
    assert sequence.chunk_ids == [-1, -1, 0, 0, -1, -1, 2]  # turn 1 generated nothing
    assert sequence.mu_logprobs == [0.0, 0.0, -0.1, -0.1, 0.0, 0.0, -0.1]
    assert (sequence.num_chunks, sequence.reward, sequence.segment) == (3, 0.5, 0)


def test_compaction_is_named_or_split_at() -> None:
    tier2 = {"type": "tier2", "tokens_before": 100}
    traj = _trajectory(([1, 2], [3]), tier2, ([1, 9], [4, 5]), ([1, 9, 4, 5, 6], [7]))
    with pytest.raises(ChunkError, match=r"step 5: .*context management \(tier2\) at step 4"):
        chunk_trajectory(traj, 1.0, passed=True)
    first, second = chunk_trajectory(traj, 1.0, passed=True, on_break="split")
    assert (first.input_ids, first.chunk_ids) == ([1, 2, 3], [-1, -1, 0])
    assert second.input_ids == [1, 9, 4, 5, 6, 7]
    assert second.chunk_ids == [-1, -1, 1, 1, -1, 2]
    assert (first.num_chunks, second.num_chunks, second.segment) == (3, 3, 1)


@pytest.mark.parametrize(
    ("next_prompt", "cause"),
    [
        ([1, 2, 3, 8, 5, 6], "completion token 1: sampled id 4, prompt has id 8"),
        ([1, 7, 3, 4, 5, 6], "token 1 differs"),
        ([1, 2, 3], "fewer than the 5"),
    ],
)
def test_a_break_names_its_cause(next_prompt: list[int], cause: str) -> None:
    traj = _trajectory(([1, 2], [3, 4, 5]), (next_prompt, [9]))
    with pytest.raises(ChunkError, match=f"step 4: .*{cause}"):
        chunk_trajectory(traj, 1.0, passed=True)


def test_unusable_trajectories_are_refused_with_the_step() -> None:
    no_ids = _trajectory()
    no_ids.add("agent", "reply", metrics=AtifMetrics(prompt_tokens=3))
    with pytest.raises(ChunkError, match="step 3 has no prompt/completion token ids"):
        chunk_trajectory(no_ids, 1.0, passed=True)
    short = _trajectory()
    metrics = AtifMetrics(prompt_token_ids=[1], completion_token_ids=[2, 3], logprobs=[-1.0])
    short.add("agent", "reply", metrics=metrics)
    with pytest.raises(ChunkError, match="step 3 has 2 completion tokens but 1 logprobs"):
        chunk_trajectory(short, 1.0, passed=True)
    with pytest.raises(ChunkError, match="no model turns"):
        chunk_trajectory(_trajectory(), 1.0, passed=True)
    with pytest.raises(ChunkError, match="finite"):
        chunk_trajectory(_trajectory(([1], [2])), float("nan"), passed=False)
    with pytest.raises(ValueError, match="on_break"):
        chunk_trajectory(_trajectory(([1], [2])), 1.0, passed=True, on_break="retokenize")  # type: ignore[arg-type]


def test_forced_expert_turns_are_context_and_chunks_count_from_the_policys_first() -> None:
    traj = _trajectory(([1, 2], [3, 4]), ([1, 2, 3, 4, 5], [6]), ([1, 2, 3, 4, 5, 6, 7], [8]))
    traj.steps[2].metrics.extra = {"forced": True}  # the first agent turn: the expert's
    [sequence] = chunk_trajectory(traj, 1.0, passed=True)
    assert sequence.input_ids == [1, 2, 3, 4, 5, 6, 7, 8]
    assert sequence.response_mask == [0, 0, 0, 0, 0, 1, 0, 1]
    assert sequence.chunk_ids == [-1, -1, -1, -1, -1, 0, -1, 1]
    assert sequence.mu_logprobs[:5] == [0.0] * 5 and sequence.num_chunks == 2
    for step in traj.steps:
        if step.source == "agent":
            step.metrics.extra = {"forced": True}
    with pytest.raises(ChunkError, match="only forced"):
        chunk_trajectory(traj, 1.0, passed=True)
