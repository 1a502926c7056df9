"""Fairness between tokens: how many blocking requests each may run at once."""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import anyio
import anyio.to_thread

from rockroll.service.store import Token

THREADS = 1024  # worker threads for blocking work, shared; each token gets max_execs of them
T = TypeVar("T")


class Slots:
    """Per token, how many blocking requests may run at once (its max_execs); the waiting ones
    wait on the event loop, holding no thread. Control requests (delete, kill) have a few
    slots of their own, so that a token can always stop what it flooded the server with."""

    CONTROL = 8

    def __init__(self) -> None:
        self._limiters: dict[str, anyio.CapacityLimiter] = {}
        self._control: dict[str, anyio.CapacityLimiter] = {}
        self._lock = threading.Lock()
        self.threads = anyio.CapacityLimiter(THREADS)

    async def control(self, token: Token, func: Callable[..., T], *args: Any) -> T:
        """`func(*args)` on a worker thread, within the token's control slots."""
        with self._lock:
            limiter = self._control.get(token.id)
            if limiter is None:
                limiter = self._control[token.id] = anyio.CapacityLimiter(self.CONTROL)
        return await self._within(limiter, func, *args)

    def of(self, token: Token) -> anyio.CapacityLimiter:
        size = token.limit("max_execs")
        total = int(size) if size is not None else THREADS
        with self._lock:
            limiter = self._limiters.get(token.id)
            if limiter is None:
                limiter = self._limiters[token.id] = anyio.CapacityLimiter(total)
            elif limiter.total_tokens != total:
                limiter.total_tokens = total
            return limiter

    async def run(self, token: Token, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """`func(*args, **kwargs)` on a worker thread, within the token's share."""
        return await self._within(self.of(token), func, *args, **kwargs)

    async def _within(
        self, limiter: anyio.CapacityLimiter, func: Callable[..., T], *args: Any, **kwargs: Any
    ) -> T:
        async with limiter:
            call = functools.partial(func, *args, **kwargs)
            return await anyio.to_thread.run_sync(call, limiter=self.threads)
