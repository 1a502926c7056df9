"""One token sequence per episode from a harness trajectory, with the model's exact tokens.

A local model records, for every agent step, the prompt token ids it saw and the completion
token ids and logprobs it sampled. Training on a whole episode needs every prompt to extend the
previous prompt plus its completion, token for token (the harness's `context_mode="linear"`).
The tokens in between (tool results and chat-template glue such as "\\n<|im_start|>user\\n") are
the environment's and carry no loss; the stop token the model sampled is its own and does.

Nothing is re-tokenized. A prompt that does not extend the sequence so far (the history was
compacted, or the chat template re-rendered the decoded completion as other tokens) is a
*break*: `on_break="error"` raises ChunkError naming the step, because silently splitting
changes what a sequence-level loss averages over; `on_break="split"` starts a new sequence
there, so every sequence is still exactly what the model saw. Chunk ids stay the episode's turn
numbers and `num_chunks` the episode's turn count, so chunk returns are the same either way.

A turn marked forced (an expert's reply that a resampled rollout starts from, docs/ipa.md
"Initialize at chunk k") is context, not action: its tokens are environment tokens, and chunks are
counted from the first generated turn, so the policy's own last turn is still the outcome chunk K.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from rockroll.agent.trajectory import AtifStep, Trajectory
from rockroll.errors import UsageError

OnBreak = Literal["error", "split"]
NOT_GENERATED = -1


class ChunkError(UsageError):
    """A trajectory that cannot become training sequences as it was recorded."""


@dataclass
class ChunkedSequence:
    """One token sequence, aligned token by token.

    `chunk_ids[t]` is the 0-based model turn that generated token t and -1 for prompt and
    environment tokens; `response_mask[t]` is 1 exactly where `chunk_ids[t] >= 0`;
    `mu_logprobs[t]` is the logprob token t was sampled with (0 where not generated).
    `num_chunks` is the episode's number of generated model turns K (forced expert turns are
    not counted), also when the episode was split. `passed` is the verifier's verdict, the one
    definition of success (docs/ipa.md): a fractional `reward` without it is a failure. `old_is_mu`:
    the weights that sampled it are gone (asynchronous training), so mu stands in for pi_old
    (docs/ipa.md point 6).
    """

    input_ids: list[int] = field(default_factory=list)
    response_mask: list[int] = field(default_factory=list)
    chunk_ids: list[int] = field(default_factory=list)
    mu_logprobs: list[float] = field(default_factory=list)
    reward: float = 0.0
    passed: bool = False
    num_chunks: int = 0
    episode_id: str = ""
    segment: int = 0
    old_is_mu: bool = False

    def __len__(self) -> int:
        return len(self.input_ids)

    def add_environment(self, ids: list[int]) -> None:
        """Append tokens the model did not generate: prompt, tool results, template glue."""
        self._append(ids, NOT_GENERATED, [0.0] * len(ids))

    def add_turn(self, chunk: int, ids: list[int], logprobs: list[float]) -> None:
        """Append the tokens of model turn `chunk` with the logprobs they were sampled with."""
        if len(ids) != len(logprobs):
            raise ValueError(f"turn {chunk}: {len(ids)} tokens but {len(logprobs)} logprobs")
        self._append(ids, chunk, logprobs)

    def _append(self, ids: list[int], chunk: int, logprobs: list[float]) -> None:
        self.input_ids += ids
        self.response_mask += [int(chunk != NOT_GENERATED)] * len(ids)
        self.chunk_ids += [chunk] * len(ids)
        self.mu_logprobs += logprobs


@dataclass(frozen=True)
class _Turn:
    step_id: int
    prompt: list[int]
    completion: list[int]
    logprobs: list[float]
    forced: bool = False


def chunk_trajectory(
    trajectory: Trajectory, reward: float, *, passed: bool, on_break: OnBreak = "error"
) -> list[ChunkedSequence]:
    """The episode's token sequences: one, or one per unbroken run of turns with "split";
    `reward` and `passed` are the verifier's."""
    if on_break not in ("error", "split"):
        raise ValueError(f"on_break must be 'error' or 'split', not {on_break!r}")
    if not math.isfinite(reward):
        raise ChunkError(f"the reward must be a finite number, not {reward!r}")
    turns = _turns(trajectory)
    generated = sum(not t.forced for t in turns)
    if not generated:
        raise ChunkError(
            f"trajectory {trajectory.session_id} has only forced (expert) turns: nothing to train"
        )
    sequences: list[ChunkedSequence] = []
    k = -1
    for i, turn in enumerate(turns):
        current = sequences[-1] if sequences else None
        if current is not None and turn.prompt[: len(current)] != current.input_ids:
            if on_break == "error":
                raise ChunkError(_break_message(trajectory, turns[i - 1], turn, current))
            current = None
        if current is None:
            current = ChunkedSequence(
                reward=reward,
                passed=passed,
                num_chunks=generated,
                episode_id=trajectory.session_id,
                segment=len(sequences),
            )
            sequences.append(current)
        current.add_environment(turn.prompt[len(current) :])
        if turn.forced:
            current.add_environment(turn.completion)
        else:
            k += 1
            current.add_turn(k, turn.completion, turn.logprobs)
    return sequences


def _turns(trajectory: Trajectory) -> list[_Turn]:
    turns = [_turn(step) for step in trajectory.steps if step.source == "agent"]
    if not turns:
        raise ChunkError(f"trajectory {trajectory.session_id} has no model turns")
    return turns


def _turn(step: AtifStep) -> _Turn:
    m = step.metrics
    if m is None or m.prompt_token_ids is None or m.completion_token_ids is None:
        raise ChunkError(
            f"step {step.step_id} has no prompt/completion token ids: "
            "training needs a trajectory recorded with a local model"
        )
    if m.logprobs is None or len(m.logprobs) != len(m.completion_token_ids):
        raise ChunkError(
            f"step {step.step_id} has {len(m.completion_token_ids)} completion tokens but "
            f"{'no' if m.logprobs is None else len(m.logprobs)} logprobs"
        )
    if not m.prompt_token_ids:
        raise ChunkError(f"step {step.step_id} has an empty prompt")
    forced = bool((m.extra or {}).get("forced"))
    return _Turn(step.step_id, m.prompt_token_ids, m.completion_token_ids, m.logprobs, forced)


def _break_message(
    trajectory: Trajectory, previous: _Turn, turn: _Turn, sequence: ChunkedSequence
) -> str:
    head = (
        f"step {turn.step_id}: the prompt does not extend step {previous.step_id}'s prompt "
        "and completion"
    )
    advice = (
        "record with context_mode='linear' and a chat template that renders completions as "
        "sampled, or pass on_break='split'"
    )
    return f"{head}: {_break_cause(trajectory, previous, turn, sequence)}; {advice}"


def _break_cause(
    trajectory: Trajectory, previous: _Turn, turn: _Turn, sequence: ChunkedSequence
) -> str:
    for step in trajectory.steps:
        event = (step.extra or {}).get("event")
        if event and previous.step_id < step.step_id < turn.step_id:
            return f"context management ({event.get('type')}) at step {step.step_id} rewrote it"
    seen = sequence.input_ids
    at = next((i for i, (a, b) in enumerate(zip(seen, turn.prompt, strict=False)) if a != b), None)
    if at is None:
        return f"the prompt has {len(turn.prompt)} tokens, fewer than the {len(seen)} before it"
    start = len(seen) - len(previous.completion)
    if at >= start:
        return (
            f"the chat template re-rendered the completion as other tokens (completion token "
            f"{at - start}: sampled id {seen[at]}, prompt has id {turn.prompt[at]})"
        )
    return f"token {at} differs (id {seen[at]} before, {turn.prompt[at]} in the prompt)"
