"""Gather calls that arrive together from several threads into one batched call.

Parallel episodes each call `complete` from their own thread; decoding them together is
several times faster on the same cores than one after another. A worker thread takes what is
queued (up to `max_batch`), waits `linger` seconds for stragglers, runs the batch function and
hands each caller its own result. A caller alone pays one thread hand-off.

Callers that know they will call again (the episodes of a rollout, whose calls come tens of
milliseconds apart after their tool calls) hold `joined()`; while any do, the worker waits for
as many of them as a batch holds instead of `linger`, but never longer than `max_wait` after the
last arrival, so one caller stuck in a long tool call does not hold up the rest for long.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from typing import Generic, TypeVar

In = TypeVar("In")
Out = TypeVar("Out")


class Batcher(Generic[In, Out]):
    """`submit(item)` returns `run([... item ...])[i]` for its own item; errors reach every
    caller of the batch that raised them."""

    def __init__(
        self,
        run: Callable[[list[In]], list[Out]],
        max_batch: int = 8,
        linger: float = 0.002,
        max_wait: float = 0.1,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        self.run = run
        self.max_batch = max_batch
        self.linger = linger
        self.max_wait = max_wait
        self._queue: list[tuple[In, Future[Out]]] = []
        self._joined = 0
        self._last_arrival = 0.0
        self._cond = threading.Condition()
        self._worker: threading.Thread | None = None
        self.batches: list[int] = []  # sizes of the batches run, for tests and benchmarks

    @contextmanager
    def joined(self) -> Iterator[None]:
        """Announce a caller that will submit again soon (see the module docstring)."""
        with self._cond:
            self._joined += 1
        try:
            yield
        finally:
            with self._cond:
                self._joined -= 1
                self._cond.notify_all()  # a batch may have been waiting for this caller

    def submit(self, item: In) -> Out:
        future: Future[Out] = Future()
        with self._cond:
            self._queue.append((item, future))
            self._last_arrival = time.monotonic()
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(
                    target=self._serve, name="rockroll-batcher", daemon=True
                )
                self._worker.start()
            self._cond.notify()
        return future.result()

    def _serve(self) -> None:
        while True:
            with self._cond:
                if not self._cond.wait_for(lambda: self._queue, timeout=30):
                    self._worker = None  # idle: the next submit starts a new worker
                    return
                if self._joined:
                    self._wait_for_joined()
                elif len(self._queue) < self.max_batch:
                    self._cond.wait(self.linger)
                batch = self._queue[: self.max_batch]
                del self._queue[: self.max_batch]
            self._run(batch)

    def _wait_for_joined(self) -> None:
        """Wait (holding the condition) until the queue holds every joined caller a batch can
        take, or `max_wait` has passed since the last arrival."""
        while len(self._queue) < min(self.max_batch, self._joined):
            left = self._last_arrival + self.max_wait - time.monotonic()
            if left <= 0:
                return
            self._cond.wait(left)

    def _run(self, batch: list[tuple[In, Future[Out]]]) -> None:
        self.batches.append(len(batch))
        try:
            results = self.run([item for item, _ in batch])
        except BaseException as exc:
            for _, future in batch:
                future.set_exception(exc)
            return
        for (_, future), result in zip(batch, results, strict=True):
            future.set_result(result)
