"""A command's output as it arrives, with backpressure: a reader that falls behind stalls the
command, never the host's memory, and a reader that leaves kills it."""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable

from rockroll.sandbox.types import ExecResult

BUFFER = 64  # chunks (up to 64 KiB each) kept for a reader that is behind
OutputCallback = Callable[[str, bytes], None]
Runner = Callable[[OutputCallback], ExecResult]


class ReaderLeft(Exception):
    """The reader closed the stream: the command is to be killed."""


class OutputStream:
    """Runs `run(on_output)` on a thread of its own; `next_chunk()` hands out what it wrote.

    At most BUFFER chunks wait for the reader; then `on_output` blocks, the pump stops reading
    the command's pipes and the command waits on its writes. Once `deadline` (monotonic) has
    passed, chunks the reader has no room for are dropped, so the command's timeout still
    fires. `close()` before the end makes `on_output` raise, which kills the command.
    """

    def __init__(self, run: Runner, deadline: float | None) -> None:
        self._chunks: queue.Queue[tuple[str, bytes] | None] = queue.Queue(maxsize=BUFFER)
        self._left = threading.Event()
        self._deadline = deadline
        self._done = False
        self.result: ExecResult | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._work, args=(run,), name="rockroll-stream", daemon=True
        )
        self._thread.start()

    def _put(self, item: tuple[str, bytes] | None, final: bool = False) -> None:
        while not self._left.is_set():
            wait = 0.1
            if self._deadline is not None and not final:
                wait = min(wait, self._deadline - time.monotonic())
                if wait <= 0:
                    return  # past the timeout: drop it, so that the command is killed
            try:
                self._chunks.put(item, timeout=wait)
                return
            except queue.Full:
                continue
        raise ReaderLeft

    def _work(self, run: Runner) -> None:
        try:
            self.result = run(lambda stream, data: self._put((stream, data)))
        except ReaderLeft:
            return
        except BaseException as exc:  # handed to the reader
            self.error = exc
        with contextlib.suppress(ReaderLeft):
            self._put(None, final=True)

    def next_chunk(self, timeout: float | None = None) -> tuple[str, bytes] | None:
        """The next (stream, bytes); None once the command has ended (then `result` or
        `error` is set). Raises TimeoutError if nothing came within `timeout` seconds."""
        if self._done:
            return None
        try:
            item = self._chunks.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError("no output yet") from None
        if item is None:
            self._done = True
        return item

    def close(self) -> None:
        """The reader is done; a command still running is killed with everything it started."""
        self._left.set()
