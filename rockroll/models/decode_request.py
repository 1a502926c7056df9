"""One completion asked of a local model's decoder, and what watches its tokens as they come."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class DecodeRequest:
    """What one caller asks of a batch: the prompt's ids, its limit, its sampling, and the
    hooks that see its tokens (stop strings, streaming, cancellation)."""

    prompt_ids: list[int]
    max_tokens: int
    temperature: float
    seed: int | None
    stop: tuple[str, ...] = ()
    top_logprobs: int = 0
    on_token: Callable[[int], None] | None = None
    cancelled: Callable[[], bool] | None = None

    @property
    def watched(self) -> bool:
        """Whether its tokens are looked at as they come (stop strings, streaming, cancel)."""
        return bool(self.stop) or self.on_token is not None or self.cancelled is not None


def watcher(group: list[DecodeRequest], tokenizer: Any) -> Callable[[int, list[int]], bool]:
    """The decoder's stop check for a batch of requests: after each token of a row, hand it to
    the request's `on_token`, then say whether the row ends now (its caller cancelled, or its
    text holds one of its stop strings; only the tail a stop string could still end in is
    decoded)."""
    tails = [max((len(s) for s in r.stop), default=0) + 2 for r in group]

    def check(row: int, ids: list[int]) -> bool:
        request = group[row]
        if request.on_token is not None:
            request.on_token(ids[-1])
        if request.cancelled is not None and request.cancelled():
            return True
        if not request.stop:
            return False
        tail = tokenizer.decode(ids[-tails[row] :], skip_special_tokens=True)
        return any(s in tail for s in request.stop if s)

    return check
