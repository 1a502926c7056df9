"""Persistent bash sessions: state (cwd, exports, background jobs) survives between commands.

Each command is sent to one long-lived `bash` as `eval` of a quoted here-document, followed by
markers carrying the exit code and the current background jobs. Bash runs with job control
(`set -m`), so every foreground command has its own process group: on timeout its group is
killed and the shell, with its background jobs, lives on.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import selectors
import signal
import time
from typing import TYPE_CHECKING

from rockroll.errors import InvalidArgument, SandboxClosed
from rockroll.sandbox import protocol
from rockroll.sandbox.base import DEFAULT_TIMEOUT, Session
from rockroll.sandbox.types import ExecResult

if TYPE_CHECKING:
    from rockroll.sandbox.records import SandboxRecord
    from rockroll.sandbox.runtime import LocalRuntime

__all__ = ["LocalSession", "Session"]  # Session: the interface, importable from here too
_GRACE = 2.0


class LocalSession(Session):
    """One bash process inside a local sandbox. Use `run()`; `close()` ends it and its jobs."""

    def __init__(
        self,
        runtime: LocalRuntime,
        rec: SandboxRecord,
        *,
        cwd: str,
        env: dict[str, str],
        user: protocol.User | None = None,
    ) -> None:
        self._runtime = runtime
        self._rec = rec
        self._proc = protocol.spawn(
            rec.sock, ["/bin/bash", "--noprofile", "--norc"], cwd=cwd, env=env, user=user
        )
        self._since: protocol.Mark | None = None
        self._jobs: list[int] = []
        self._dead: str | None = None
        self._send(b"set -m\n")

    def run(self, cmd: str, *, timeout: float | None = DEFAULT_TIMEOUT) -> ExecResult:
        """Run `cmd` in the shell; the result has this command's exit code and output only."""
        if not isinstance(cmd, str):
            raise InvalidArgument(f"cmd must be a string, got {type(cmd).__name__}")
        if self._dead:
            raise SandboxClosed(self._dead)
        tag = "__RR_" + secrets.token_hex(8)
        script = (
            f"eval \"$(cat <<'{tag}'\n{cmd}\n{tag}\n)\" </dev/null; __rr=$?; "
            f"printf '\\n{tag} %d %s\\n' \"$__rr\" \"$(jobs -p | tr '\\n' ' ')\"; "
            f"printf '\\n{tag}\\n' >&2\n"
        )
        started = time.time()
        try:
            self._since = protocol.mark(self._rec.sock)
        except SandboxClosed:
            self._dead = "the sandbox is gone"
            raise SandboxClosed(self._dead) from None
        self._send(script.encode())
        result = self._collect(tag, timeout, self._rec.spec.max_output)
        self._runtime.audit(self._rec, cmd, result, started)
        return result

    def _send(self, data: bytes) -> None:
        try:
            assert self._proc.stdin is not None
            self._proc.stdin.write(data)
        except (BrokenPipeError, OSError):
            self._dead = "the session's shell has exited (e.g. after `exit`); open a new session"
            raise SandboxClosed(self._dead) from None

    def _collect(self, tag: str, timeout: float | None, cap: int) -> ExecResult:
        start = time.monotonic()
        reader = _MarkerReader(self._proc, tag, cap)
        timed_out = False
        deadline = None if timeout is None else start + timeout
        while not reader.done():
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                if timed_out:
                    self._kill_shell()
                    break
                timed_out = True
                self._interrupt()
                deadline = now + _GRACE
            if not reader.step(None if deadline is None else max(0.0, deadline - now)):
                self._dead = "the session's shell has exited (e.g. after `exit`); open a new one"
                break
        code, jobs = reader.trailer()
        if code is None or timed_out:
            code = 137 if timed_out else self._exit_status()
        else:
            self._jobs = jobs
        out, err = reader.buffers
        return ExecResult(
            exit_code=code,
            stdout=out.text(),
            stderr=err.text(),
            duration=time.monotonic() - start,
            timed_out=timed_out,
            truncated=bool(out.dropped or err.dropped),
        )

    def _exit_status(self) -> int:
        """The shell's exit code, once its pipes closed: the init reports it a moment later."""
        self._dead = self._dead or "the session's shell has exited (e.g. after `exit`)"
        try:
            status = self._proc.wait(_GRACE)
        except SandboxClosed:
            status = None
        return _exit_code(status)

    def _interrupt(self) -> None:
        """Kill what the foreground command started, sparing the shell, its jobs and what
        earlier commands left running. The shell is a child subreaper, so a `setsid` or
        double-forked child of the command is still the shell's descendant, and it started
        after the command did."""
        try:
            protocol.signal_descendants(
                self._rec.sock,
                self._proc.pid,
                signal.SIGKILL,
                [self._proc.pid, *self._jobs],
                since=self._since,
            )
        except SandboxClosed:
            self._dead = "the sandbox is gone"

    def _kill_shell(self) -> None:
        """The shell itself is stuck (a busy loop in a builtin): end the session."""
        self._proc.kill(signal.SIGKILL)
        self._dead = (
            "the session was ended because its command could not be interrupted at the "
            "timeout (a shell builtin loop); open a new session"
        )

    def close(self) -> None:
        """End the shell and every process it started."""
        if self._dead is None:
            self._dead = "the session is closed; open a new one with sandbox.session()"
        with contextlib.suppress(SandboxClosed):
            protocol.signal_descendants(self._rec.sock, self._proc.pid, signal.SIGKILL, [])
        self._proc.kill(signal.SIGKILL)
        self._proc.close()


class _MarkerReader:
    """Reads stdout and stderr of the shell until each shows the command's end marker."""

    def __init__(self, proc: protocol.Process, tag: str, cap: int) -> None:
        self.proc = proc
        self.buffers = (protocol.CappedBuffer(cap), protocol.CappedBuffer(cap))
        self.markers = {
            proc.stdout_fd: (self.buffers[0], f"\n{tag} ".encode()),
            proc.stderr_fd: (self.buffers[1], f"\n{tag}\n".encode()),
        }
        self.raw = {fd: bytearray() for fd in self.markers}
        self.rest: dict[int, bytes] = {}
        self.sel = selectors.DefaultSelector()
        for fd in self.markers:
            self.sel.register(fd, selectors.EVENT_READ)
        self.sel.register(proc.sock, selectors.EVENT_READ)

    def done(self) -> bool:
        finished = len(self.rest) == 2
        if finished:
            self.sel.close()
        return finished

    def step(self, timeout: float | None) -> bool:
        """Read what is ready; False once the shell has exited."""
        for key, _ in self.sel.select(timeout):
            if key.fileobj is self.proc.sock:
                if self.proc.poll() is not None:
                    self._drain()
                    self.sel.close()
                    return False
                continue
            self._read(key.fd)
        return True

    def _read(self, fd: int) -> None:
        chunk = os.read(fd, 65536)
        buf, marker = self.markers[fd]
        raw = self.raw[fd]
        if not chunk:
            self.sel.unregister(fd)
            self.rest[fd] = b""
            buf.add(bytes(raw))
            return
        raw += chunk
        idx = raw.find(marker)
        if idx >= 0:
            buf.add(bytes(raw[:idx]))
            self.rest[fd] = bytes(raw[idx + len(marker) :])
            self.sel.unregister(fd)
        elif len(raw) > len(marker) + 65536:
            keep = len(raw) - len(marker)
            buf.add(bytes(raw[:keep]))
            del raw[:keep]

    def _drain(self) -> None:
        for fd in self.markers:
            if fd in self.rest:
                continue
            os.set_blocking(fd, False)
            with contextlib.suppress(BlockingIOError):
                while chunk := os.read(fd, 65536):
                    self.raw[fd] += chunk
            self.markers[fd][0].add(bytes(self.raw[fd]))

    def trailer(self) -> tuple[int | None, list[int]]:
        fields = self.rest.get(self.proc.stdout_fd, b"").split(b"\n", 1)[0].split()
        if not fields:
            return None, []
        return int(fields[0]), [int(p) for p in fields[1:]]


def _exit_code(status: tuple[int, int] | None) -> int:
    return 1 if status is None else status[0]
