"""The commands started through E2B's process service, per sandbox and by pid, each run by
`Sandbox.exec` on a thread of its own, its output fanned out to every stream that follows it.

A command runs as `sh -c 'echo $$; exec "$@"' sh CMD ARGS...`: the first line of its stdout is
its pid inside the sandbox (stripped before anyone sees it), and `exec` keeps that pid, the
leader of its own session and process group, for the command. A signal goes to that group
(`kill -s SIG -- -PID`, run as the sandbox's root). A command ends with the stream: at the
caller's deadline (`Connect-Timeout-Ms`, the SDK's `timeout`) it is killed, as `exec` does.

A token runs at most its `max_execs` commands at once this way (each holds a host thread while
it runs). Followers never stall a command: each has its own queue, and output past `BUDGET` unread
bytes is dropped for that follower (the command, and other followers, are not affected).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from dataclasses import dataclass, field
from typing import Any

from rockroll.errors import QuotaExceeded
from rockroll.sandbox.base import Sandbox
from rockroll.sandbox.types import ExecResult
from rockroll.service.store import Token

BUDGET = 16 << 20  # unread bytes kept per follower
START_WAIT = 60.0  # seconds to wait for a command to report its pid
WRAPPER = ["/bin/sh", "-c", 'echo $$; exec "$@"', "sh"]
SIGNALS = {"SIGNAL_SIGKILL": "KILL", "SIGNAL_SIGTERM": "TERM", 9: "KILL", 15: "TERM"}


@dataclass
class Ending:
    """How a command ended: its exit (code, or -1 and the signal), or an error of the run."""

    exit_code: int = 0
    signal: int | None = None
    error: BaseException | None = None
    timed_out: bool = False


@dataclass
class Config:
    """What was asked to run (E2B's ProcessConfig)."""

    cmd: str
    args: list[str] = field(default_factory=list)
    envs: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None


class Follower:
    """One stream's view of a command: output and the end, in order, on its event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self.unread = 0
        self.dropped = 0

    def push(self, kind: str, value: Any) -> None:
        """From any thread; never blocks."""
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody reads any more
            self.loop.call_soon_threadsafe(self._push, kind, value)

    def _push(self, kind: str, value: Any) -> None:
        if kind != "end":
            if self.unread + len(value) > BUDGET:
                self.dropped += len(value)
                return
            self.unread += len(value)
        self.queue.put_nowait((kind, value))

    async def next(self, timeout: float) -> tuple[str, Any] | None:
        """The next ("stdout" | "stderr", bytes) or ("end", Ending); None after `timeout` s."""
        try:
            kind, value = await asyncio.wait_for(self.queue.get(), timeout)
        except TimeoutError:
            return None
        if kind != "end":
            self.unread -= len(value)
        return kind, value


class Process:
    """A command of a sandbox, while it runs."""

    def __init__(self, sandbox_id: str, config: Config, tag: str | None) -> None:
        self.sandbox_id, self.config, self.tag = sandbox_id, config, tag
        self.pid = 0
        self.ending: Ending | None = None
        self.settled = threading.Event()  # the pid is known, or the run ended without one
        self._followers: list[Follower] = []
        self._lock = threading.Lock()
        self._head = b""  # stdout until the pid line is complete

    def follow(self, loop: asyncio.AbstractEventLoop) -> Follower:
        follower = Follower(loop)
        with self._lock:
            if self.ending is not None:
                follower.push("end", self.ending)
            else:
                self._followers.append(follower)
        return follower

    def leave(self, follower: Follower) -> None:
        with self._lock:
            if follower in self._followers:
                self._followers.remove(follower)

    def publish(self, kind: str, value: Any) -> None:
        with self._lock:
            followers = list(self._followers)
            if kind == "end":
                self.ending, self._followers = value, []
        for follower in followers:
            follower.push(kind, value)

    def output(self, stream: str, data: bytes) -> None:
        """`exec`'s on_output: the pid line first, then the command's own output."""
        if not self.pid and stream == "stdout":
            self._head += data
            line, newline, rest = self._head.partition(b"\n")
            if not newline:
                return
            self.pid, self._head = int(line.strip() or b"0"), b""
            self.settled.set()
            data = rest
        if data:
            self.publish(stream, data)


class ProcessTable:
    """The running commands of every sandbox, by (sandbox id, pid)."""

    def __init__(self) -> None:
        self._procs: dict[tuple[str, int], Process] = {}
        self._owned: dict[str, int] = {}  # commands running per token id
        self._lock = threading.Lock()

    def start(
        self,
        owner: Token,
        sandbox: Sandbox,
        config: Config,
        *,
        tag: str | None,
        user: str | None,
        timeout: float | None,
        loop: asyncio.AbstractEventLoop,
    ) -> tuple[Process, Follower]:
        """Start the command and wait for its pid (blocking); its first follower is attached
        before any output. Raises what `exec` raises when the command cannot start, and
        QuotaExceeded past the token's `max_execs` commands at once."""
        self._reserve(owner)
        proc = Process(sandbox.id, config, tag)
        follower = proc.follow(loop)
        thread = threading.Thread(
            target=self._run,
            args=(owner.id, sandbox, proc, user, timeout),
            name=f"rockroll-e2b-{sandbox.id}",
            daemon=True,
        )
        try:
            thread.start()
        except BaseException:
            self._release(owner.id)
            raise
        if not proc.settled.wait(START_WAIT):
            raise TimeoutError(f"the command did not report its pid within {START_WAIT:g} s")
        if not proc.pid:
            error = proc.ending.error if proc.ending is not None else None
            raise error or RuntimeError("the command ended before it reported its pid")
        with self._lock:
            if proc.ending is None:  # else it ended already: nothing to list
                self._procs[(proc.sandbox_id, proc.pid)] = proc
        return proc, follower

    def _run(
        self, owner: str, sandbox: Sandbox, proc: Process, user: str | None, t: float | None
    ) -> None:
        argv = [*WRAPPER, proc.config.cmd, *proc.config.args]
        ending = Ending()
        try:
            result = sandbox.exec(
                argv,
                timeout=t,
                cwd=proc.config.cwd or None,
                env=proc.config.envs,
                on_output=proc.output,
                user=user,
            )
            ending = _ending(result)
        except BaseException as exc:  # handed to the followers, or to start()
            ending = Ending(error=exc)
        finally:
            proc.publish("end", ending)
            with self._lock:
                self._procs.pop((proc.sandbox_id, proc.pid), None)
            self._release(owner)
            proc.settled.set()

    def _reserve(self, owner: Token) -> None:
        """Count one more command of `owner`'s; QuotaExceeded past its max_execs."""
        limit = owner.limit("max_execs")
        with self._lock:
            running = self._owned.get(owner.id, 0)
            if limit is not None and running >= limit:
                raise QuotaExceeded(
                    f"token {owner.name!r} runs {running} commands already (max_execs {limit:g})"
                )
            self._owned[owner.id] = running + 1

    def _release(self, owner_id: str) -> None:
        with self._lock:
            self._owned[owner_id] -= 1
            if not self._owned[owner_id]:
                del self._owned[owner_id]

    def get(self, sandbox_id: str, pid: int) -> Process | None:
        with self._lock:
            return self._procs.get((sandbox_id, pid))

    def find(self, sandbox_id: str, tag: str) -> Process | None:
        with self._lock:
            for (sid, _), proc in self._procs.items():
                if sid == sandbox_id and proc.tag == tag:
                    return proc
        return None

    def running(self, sandbox_id: str) -> list[Process]:
        with self._lock:
            return [p for (sid, _), p in sorted(self._procs.items()) if sid == sandbox_id]

    def signal(self, sandbox: Sandbox, proc: Process, sig: str) -> None:
        """Send `sig` ("KILL", "TERM") to the command's process group (blocking)."""
        script = 'kill -s "$1" -- "-$2" 2>/dev/null || kill -s "$1" "$2"'
        sandbox.exec(["/bin/sh", "-c", script, "sh", sig, str(proc.pid)], timeout=30, user="0")


def _ending(result: ExecResult) -> Ending:
    if result.timed_out:
        return Ending(exit_code=-1, signal=9, timed_out=True)
    if result.signal:
        return Ending(exit_code=-1, signal=result.signal)
    return Ending(exit_code=result.exit_code)
