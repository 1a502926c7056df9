"""What the harness and the trainer need from a model backend, declared once.

`Model` is all the agent loop uses. A backend that decodes many calls as one batch, scores
tokens or takes new weights says so by implementing one of the capability protocols below;
the trainer checks for them with `isinstance`, never by probing attribute names.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, Protocol, runtime_checkable

from rockroll.models.messages import Completion, Message


@runtime_checkable
class Model(Protocol):
    """What the agent loop needs from a model backend."""

    name: str
    context_window: int
    native_tools: bool  # True when `complete` returns structured tool_calls

    def complete(
        self,
        messages: list[Message],
        tools: list[dict] | None,
        *,
        max_tokens: int = 1024,
        temperature: float = 0.0,
        seed: int | None = None,
    ) -> Completion: ...

    def count_tokens(self, messages: list[Message]) -> int: ...


@runtime_checkable
class BatchedDecoding(Protocol):
    """A backend whose concurrent `complete` calls share decode steps (see `models.batching`)."""

    def joined(self) -> AbstractContextManager[None]:
        """Held by a caller that will call `complete` again soon, so its calls join a batch."""
        ...

    def drive(self, until: Callable[[], bool], start: Callable[[], object]) -> None:
        """Call `start`, then decode other threads' calls on this thread until `until()`."""
        ...


@runtime_checkable
class Scoring(Protocol):
    """A backend that gives the logprobs of given tokens (for resampling and checks)."""

    def score(
        self, prompt_ids: list[int], completion_ids: list[int], temperature: float = 0.0
    ) -> list[float]: ...


def approx_tokens(messages: list[Message]) -> int:
    """Rough token count (4 characters a token) for backends without a tokenizer at hand.

    Good enough to decide when to trim history; never use it for accounting.
    """
    total = 3  # reply priming
    for m in messages:
        text = m.content
        for c in m.tool_calls:
            text += c.name + json.dumps(c.arguments, ensure_ascii=False)
        total += len(text) // 4 + 4  # role and separators
    return total


def parse_arguments(raw: Any) -> dict:
    """Arguments as a dict; anything else is kept as {"__raw__": text} for the loop to report."""
    if isinstance(raw, dict):
        return raw
    if raw is None or raw == "":
        return {}
    if isinstance(raw, str):
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            return {"__raw__": raw}
        if isinstance(value, dict):
            return value
    return {"__raw__": raw if isinstance(raw, str) else json.dumps(raw)}
