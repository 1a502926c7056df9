"""Gather calls that arrive together from several threads into one batched call.

Parallel episodes each call `complete` from their own thread; decoding them together is
several times faster on the same cores than one after another. A worker thread takes what is
queued (up to `max_batch`), waits `linger` seconds for stragglers, runs the batch function and
hands each caller its own result. A caller alone pays one thread hand-off.

Callers that know they will call again (the episodes of a rollout, whose calls come tens of
milliseconds apart after their tool calls) hold `joined()`; while any do, the worker waits for
as many of them as a batch holds instead of `linger`, but never longer than `max_wait` after the
last arrival, so one caller stuck in a long tool call does not hold up the rest for long.

A thread with nothing else to do while others submit (a trainer waiting for its rollouts) can
run the batches itself with `drive(until)`. That keeps all model work on one thread: with
OpenMP (PyTorch on CPU), a second thread running the model gets its own team of worker threads,
and once a process has more of those than cores, idle workers sleep instead of spinning and
every parallel region pays a wake-up; decoding on a second thread measured about 30% slower.
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
        self._drivers = 0
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
            if not self._drivers:
                self._ensure_worker()
            self._cond.notify_all()
        return future.result()

    def drive(
        self,
        until: Callable[[], bool],
        start: Callable[[], object] = lambda: None,
        poll: float = 0.02,
    ) -> None:
        """Run batches on the calling thread until `until()` is true (checked at least every
        `poll` seconds, under the batcher's lock: keep it cheap). Start the work whose calls
        this serves in `start`: it runs once this thread is registered as the driver, so no
        call reaches the worker thread first. The worker takes no batch while a driver is
        registered; what is still queued when this returns goes to it."""
        with self._cond:
            self._drivers += 1
        try:
            start()
            while True:
                with self._cond:
                    self._cond.wait_for(lambda: self._queue or until(), timeout=poll)
                    if not self._queue:
                        if until():
                            return
                        continue
                    batch = self._take()
                self._run(batch)
        finally:
            with self._cond:
                self._drivers -= 1
                if self._queue and not self._drivers:
                    self._ensure_worker()
                self._cond.notify_all()

    def _ensure_worker(self) -> None:
        """Start the worker thread unless it runs (holding the condition)."""
        if self._worker is None or not self._worker.is_alive():
            self._worker = threading.Thread(
                target=self._serve, name="rockroll-batcher", daemon=True
            )
            self._worker.start()

    def _serve(self) -> None:
        while True:
            with self._cond:
                if not self._cond.wait_for(lambda: self._queue and not self._drivers, timeout=30):
                    self._worker = None  # idle: the next submit starts a new worker
                    return
                batch = self._take()
            self._run(batch)

    def _take(self) -> list[tuple[In, Future[Out]]]:
        """The next batch, after waiting for joined callers or stragglers (holding the
        condition)."""
        if self._joined:
            self._wait_for_joined()
        elif len(self._queue) < self.max_batch:
            self._cond.wait(self.linger)
        batch = self._queue[: self.max_batch]
        del self._queue[: self.max_batch]
        return batch

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
