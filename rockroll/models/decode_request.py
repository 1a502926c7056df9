"""One completion asked of a local model's decoder, and what watches its tokens as they come."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class DecodeRequest:
    """What one caller asks of a batch: the prompt's ids, its limit, its sampling, and the
    hooks that see its tokens (stop strings, streaming, cancellation), and the grammar they
    must follow."""

    prompt_ids: list[int]
    max_tokens: int
    temperature: float
    seed: int | None
    stop: tuple[str, ...] = ()
    top_logprobs: int = 0
    on_token: Callable[[int], None] | None = None
    cancelled: Callable[[], bool] | None = None
    grammar: str | None = None  # llguidance grammar its tokens must follow (constraints.py)

    @property
    def watched(self) -> bool:
        """Whether its tokens are looked at as they come (stop strings, streaming, cancel)."""
        return bool(self.stop) or self.on_token is not None or self.cancelled is not None


def watch(request: DecodeRequest, tokenizer: Any) -> Callable[[list[int]], bool] | None:
    """The decoder's check of one request's row (None when nothing watches it): after each
    token, hand it to the request's `on_token`, then say whether the row ends now (its caller
    cancelled, or its text holds one of its stop strings; only the tail a stop string could
    still end in is decoded)."""
    if not request.watched:
        return None
    tail = max((len(s) for s in request.stop), default=0) + 2

    def check(ids: list[int]) -> bool:
        if request.on_token is not None:
            request.on_token(ids[-1])
        if request.cancelled is not None and request.cancelled():
            return True
        if not request.stop:
            return False
        text = tokenizer.decode(ids[-tail:], skip_special_tokens=True)
        return any(s in text for s in request.stop if s)

    return check
