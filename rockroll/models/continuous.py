"""Continuous (iteration-level) batching: requests join a decoding batch between its steps.

`Batcher` runs whole batches: a request that arrives while one decodes waits for its longest
row. Behind a shared server that means a 3-token question waits for someone's 9,000-token
answer. Here one worker thread keeps one `Decoding` in flight and does one thing at a time, so
that a newcomer never waits long for what runs before it:

- prefill newcomers whose prompts are short (at most `chunk` tokens, several at once when they
  fit in four times `chunk` padded tokens), shortest first: their first token goes out right
  after;
- or one `chunk` of a long prompt's prefill (its rows join when the last chunk is in), taken
  between decoding steps so the rows already decoding keep going;
- or one decoding step: every row in the batch gets its next token, and a row that ends is
  handed back to its caller at once, its slot free for the next newcomer.

At most `max_batch` rows are in flight; at most four prefills run back to back before a step,
and a long prompt waiting over `AGED` seconds goes before short ones, so neither side starves
the other; long prompts start in the order they came. After an operation that ended rows, the
worker waits up to `linger` seconds for a newcomer before the next step: a client that asks
again as soon as it has its answer (an agent's next turn, a benchmark's next request) would
otherwise arrive just after that step began and wait it out.

Each operation holds the weights lock, and a row reports the weights version it was admitted
under; weights that change while rows are in flight would give those rows tokens of two
versions, so this is the scheduler of a server over fixed weights (`rockroll model serve`),
while training keeps whole batches.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field

from rockroll.models.generation import Decoding, Row

AGED = 10.0  # seconds a long prompt waits before it goes ahead of short ones


class Continuous:
    """`submit(row)` blocks until `row` has ended (its tokens are in it) and returns the weights
    version that sampled it; an error of the batch reaches every row in it."""

    def __init__(
        self,
        decoding: Callable[[], Decoding],
        lock: threading.Lock,
        version: Callable[[], int],
        max_batch: int = 16,
        chunk: int = 64,
        linger: float = 0.01,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        self.decoding = decoding
        self.lock = lock
        self.version = version
        self.max_batch = max_batch
        self.chunk = chunk
        self.linger = linger
        self._queue: list[tuple[Row, Future[int], float]] = []
        self._cond = threading.Condition()
        self._worker: threading.Thread | None = None

    def submit(self, row: Row) -> int:
        future: Future[int] = Future()
        with self._cond:
            self._queue.append((row, future, time.monotonic()))
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(
                    target=self._serve, name="rockroll-continuous", daemon=True
                )
                self._worker.start()
            self._cond.notify_all()
        return future.result()

    @contextlib.contextmanager
    def joined(self) -> Iterator[None]:
        """Nothing to wait for: a caller's next request joins the batch whenever it comes."""
        yield

    def drive(
        self, until: Callable[[], bool], start: Callable[[], object], poll: float = 0.02
    ) -> None:
        """Call `start`, then wait until `until()`: the worker thread does the decoding."""
        start()
        while not until():
            time.sleep(poll)

    def _serve(self) -> None:
        state = _State()
        while True:
            with self._cond:
                if not self._cond.wait_for(lambda s=state: self._queue or s.busy, timeout=30):
                    self._worker = None  # idle: the next submit starts a new worker
                    return
                if state.freed and not self._queue:
                    self._cond.wait(self.linger)  # a caller whose row just ended may ask again
                op, rows = self._next(state)
            try:
                with self.lock:
                    if state.decoding is None or not (state.decoding.rows or state.partial):
                        state.decoding = self.decoding()  # the weights of now (a synced copy)
                    version = self.version()
                    for row, future in rows:
                        state.waiting[row] = (future, version)
                    ended = self._run(state, op, [row for row, _ in rows])
            except BaseException as exc:
                for future, _ in state.waiting.values():
                    future.set_exception(exc)
                state = _State()
                continue
            for row in ended:
                future, version = state.waiting.pop(row)
                future.set_result(version)
            state.freed = bool(ended)

    def _next(self, state: _State) -> tuple[str, list[tuple[Row, Future[int]]]]:
        """What to do next, and the queued rows it takes (holding the condition)."""
        live = bool(state.decoding and state.decoding.rows)
        room = self.max_batch - len(state.waiting)
        now = time.monotonic()
        short: list[tuple[Row, Future[int], float]] = []
        long: list[tuple[Row, Future[int], float]] = []  # in the order they came
        for q in self._queue:
            (short if len(q[0].prompt) <= self.chunk or q[0].limit <= 0 else long).append(q)
        short.sort(key=lambda q: len(q[0].prompt))
        may_prefill = state.prefills < 4 or not live
        between = state.last == "step" or not live  # a long prefill's chunks alternate with steps
        due = between and (
            (state.partial is not None and now - state.since > AGED)
            or (state.partial is None and bool(long) and now - long[0][2] > AGED)
        )
        if short and room > 0 and may_prefill and not due:
            return "admit", self._pop(self._fit(short, room))
        if state.partial and between:
            return "part", []
        if long and room > 0 and state.partial is None and between:
            first = long[0][0]
            taken = self._pop([q for q in long if q[0].prompt == first.prompt][:room])
            state.partial, state.since = [row for row, _ in taken], now
            return "part", taken
        return ("step", []) if live else ("part", [])

    def _run(self, state: _State, op: str, rows: list[Row]) -> list[Row]:
        """Do `op` on the decoding (holding the weights lock); the rows that ended."""
        decoding = state.decoding
        assert decoding is not None
        if op == "step":
            state.prefills, state.last = 0, "step"
            return decoding.step()
        state.prefills, state.last = state.prefills + 1, "prefill"
        if op == "admit":
            return decoding.admit(rows)
        assert state.partial is not None
        ended = decoding.admit_part(state.partial, self.chunk)
        if ended is None:
            return []
        state.partial = None
        return ended

    def _fit(self, ready: list[tuple[Row, Future[int], float]], room: int) -> list:
        """The short newcomers to prefill together: the first, then others while the padded
        prefill (its distinct prompts, padded to the longest) stays within `4 * chunk` tokens.
        A batched prefill of short prompts costs far less than one after another on CPU too
        (four 33-token prompts of SmolLM2 in bfloat16: 1.6 times one of them)."""
        taken = [ready[0]]
        width, distinct = len(ready[0][0].prompt), {tuple(ready[0][0].prompt)}
        for q in ready[1:]:
            wider, more = max(width, len(q[0].prompt)), distinct | {tuple(q[0].prompt)}
            if len(taken) >= room or wider * len(more) > 4 * self.chunk:
                break
            taken.append(q)
            width, distinct = wider, more
        return taken

    def _pop(self, picked: list[tuple[Row, Future[int], float]]) -> list[tuple[Row, Future[int]]]:
        for q in picked:
            self._queue.remove(q)
        return [(row, future) for row, future, _ in picked]


@dataclass
class _State:
    """The worker's own: the batch, the rows in it (or being prefilled) and their callers."""

    decoding: Decoding | None = None
    waiting: dict[Row, tuple[Future[int], int]] = field(default_factory=dict)
    partial: list[Row] | None = None  # rows of one long prompt, prefilled chunk by chunk
    since: float = 0.0  # when its prefill began
    prefills: int = 0  # prefills since the last step
    freed: bool = False  # rows ended in the last operation
    last: str = "step"

    @property
    def busy(self) -> bool:
        return bool(self.waiting)
