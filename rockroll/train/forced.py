"""The policy made to say an expert's replies: what it sees and says, in its own token ids.

Expert trajectories (ipa.md, "Chunk-Level Initialized Resampling") are replayed by the same
harness as the policy: `ForcedModel` says the expert's replies in order; `ResumedModel` says the
first `start` of them (marked forced: context, never trained on) and then lets the policy
sample. Replies are tokenized with the policy's tokenizer and end with its end-of-turn token, and
the ids are remembered so later prompts continue from exactly those ids.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from rockroll.agent.local import LocalModel
from rockroll.agent.messages import Completion, Message
from rockroll.agent.models import ModelError

if TYPE_CHECKING:
    from rockroll.train.states import ExpertStates

Source = Literal["oracle", "teacher", "policy"]


@dataclass(eq=False)
class Expert:
    """A verified expert trajectory of one task: its replies (one per turn, the last submits),
    where it came from, and, once recorded, the sandbox states after each of its turns."""

    task_id: str
    replies: list[str]
    source: Source = "oracle"
    step: int = 0  # the training step it was found at (policy successes are refreshed)
    states: ExpertStates | None = field(default=None, repr=False)

    @property
    def turns(self) -> int:
        return len(self.replies)

    def record(self) -> dict:
        return {
            "task_id": self.task_id,
            "replies": self.replies,
            "source": self.source,
            "step": self.step,
        }


class ForcedModel:
    """The policy, forced to say `replies` in order; `forced` marks the completions as context.

    The reply is chosen by the number of assistant turns already in the conversation, so an
    episode run again (an infrastructure retry) starts the script again by itself.
    """

    native_tools = False

    def __init__(self, policy: LocalModel, replies: list[str], *, forced: bool = False) -> None:
        self.policy = policy
        self.replies = replies
        self.forced = forced
        self.name = f"expert:{policy.name}"
        self.context_window = policy.context_window

    def count_tokens(self, messages: list[Message]) -> int:
        return self.policy.count_tokens(messages)

    def complete(
        self,
        messages: list[Message],
        tools: list[dict] | None,
        *,
        max_tokens: int = 1024,
        temperature: float = 0.0,
        seed: int | None = None,
    ) -> Completion:
        turn = sum(m.role == "assistant" for m in messages)
        if turn >= len(self.replies):
            raise ModelError(f"the expert has no reply after {turn}")
        text = self.replies[turn]
        prompt = self.policy.prompt_ids(messages, tools)
        ids = self.policy.tokenizer.encode(text, add_special_tokens=False)
        ids.append(self.policy.end_of_turn_id)
        self.policy.remember(prompt, ids)
        return Completion(
            message=Message(role="assistant", content=text),
            finish_reason="stop",
            prompt_tokens=len(prompt),
            completion_tokens=len(ids),
            prompt_token_ids=prompt,
            token_ids=ids,
            logprobs=[0.0] * len(ids),
            forced=self.forced,
        )


class ResumedModel:
    """The policy restarted at turn `start` of an expert trajectory (ipa.md, "Initialize at
    chunk k"): the expert's first `start` replies are imposed and marked forced, and from then
    on the policy samples as usual."""

    native_tools = False

    def __init__(self, policy: LocalModel, replies: list[str], start: int) -> None:
        if not 0 <= start < len(replies):
            raise ValueError(
                f"start must be in [0, {len(replies)}), the expert's turns; got {start}"
            )
        self.policy = policy
        self.start = start
        self.expert = ForcedModel(policy, replies[:start], forced=True)
        self.name = policy.name
        self.context_window = policy.context_window

    def count_tokens(self, messages: list[Message]) -> int:
        return self.policy.count_tokens(messages)

    def complete(
        self, messages: list[Message], tools: list[dict] | None, **kw: object
    ) -> Completion:
        if sum(m.role == "assistant" for m in messages) < self.start:
            return self.expert.complete(messages, tools)
        return self.policy.complete(messages, tools, **kw)  # type: ignore[arg-type]
