"""Progress of a long run, for a person at a terminal and for a log file alike.

On a terminal: a bar. On a pipe or a file (where a bar prints nothing until the end): one line
per finished item, every log line the run emits (image builds), and while items are running a
line at least every `every` seconds saying how many are done and how long it has been.
"""

from __future__ import annotations

import threading
import time
from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn


class RunProgress:
    """`done(line, hit)` after each item (`hit`: it counts, e.g. passed); `log(line)` for what
    happens in between."""

    def __init__(
        self,
        label: str,
        total: int,
        console: Console,
        every: float = 30.0,
        counted: str | None = "passed",
    ) -> None:
        self.label, self.total, self.console, self.every = label, total, console, every
        self.counted = counted  # what `done(..., hit=True)` counts, None: nothing
        self.finished = self.passed = 0
        self.started = time.monotonic()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._bar: Progress | None = None
        self._ticker: threading.Thread | None = None

    def __enter__(self) -> RunProgress:
        if self.console.is_terminal:
            self._bar = Progress(
                "[progress.description]{task.description}",
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=self.console,
            )
            self._bar.__enter__()
            self._task = self._bar.add_task(self.label, total=self.total)
        else:
            self._say(
                f"{self.label}: {self.total} to run" if self.total else f"{self.label}: starting"
            )
            self._ticker = threading.Thread(target=self._tick, daemon=True)
            self._ticker.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        if self._bar is not None:
            self._bar.__exit__(kind, exc, tb)
        if self._ticker is not None:
            self._ticker.join()
            self._say(self._status())

    def add_total(self, more: int) -> None:
        """More items than first thought (a run that learns its size as it goes)."""
        with self._lock:
            self.total += more
        if self._bar is not None:
            self._bar.update(self._task, total=self.total)

    def done(self, line: str, hit: bool = False) -> None:
        with self._lock:
            self.finished += 1
            self.passed += hit
            status = f"{self.passed} {self.counted}" if self.counted else f"{self.finished} done"
        if self._bar is not None:
            self._bar.update(self._task, advance=1, description=f"{self.label}: {status}")
        else:
            self._say(f"[{self.finished}/{self.total}] {line}")

    def log(self, line: str) -> None:
        if self._bar is None:
            self._say(line)

    def _tick(self) -> None:
        while not self._stop.wait(self.every):
            self._say(self._status() + " so far")

    def _status(self) -> str:
        elapsed = time.monotonic() - self.started
        counted = f", {self.passed} {self.counted}" if self.counted else ""
        return f"{self.label}: {self.finished}/{self.total} done{counted}, {elapsed:.0f} s"

    def _say(self, line: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        self.console.print(f"{stamp} {line}", markup=False, highlight=False, soft_wrap=True)
