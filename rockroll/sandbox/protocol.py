"""Host-side client of rockroll-init, the process that runs commands inside a sandbox.

Wire protocol (unix stream socket, one request per connection):

- Request: 4-byte little-endian length L, then L bytes of NUL-terminated fields, sent with
  sendmsg. The first sendmsg carries SCM_RIGHTS with the command's stdin, stdout, stderr.
  Payload at most 16 MiB.
- Exec: ``X, cwd, argc, argv..., envc, "K=V"...`` and optionally ``U, uid, gid, n, gid...``
  (run as that user and groups). The init forks; the child calls setsid(), becomes a child
  subreaper (orphans of its tree come back to it), resets signals, switches user, chdirs,
  dup2s the fds to 0/1/2 and execs (searching the request's PATH, or a default PATH when the
  env has none). Replies, one line each: ``P <pid>`` started (pid inside the sandbox), then
  ``X <code> <signal>`` when it exits (code is 128+signal when killed); or
  ``E <errno> <step> <strerror>`` (step: chdir, exec, user, request, fork, setup) and nothing
  more. The init closes the connection after X or E.
- While the command runs the host may send ``K <sig>\\n`` lines: kill(-pgid, sig), and for
  SIGKILL the command's whole tree (every descendant, `setsid` ones included). Closing the
  connection before X kills the tree too (the caller gave up).
- Mark: ``M`` without fds: reply ``OK <ticks> <last_pid>``, the clock tick now (after boot, as
  /proc/PID/stat counts start times) and the pid namespace's last allocated pid.
- Descendants: ``D, sig, root_pid, n, pgid..., since, last`` without fds: signal every
  descendant of root_pid whose process group is not listed and that is newer than the mark
  (`since`, `last`): it started after tick `since`, or within it with a pid above `last`
  (since 0: any); reply ``OK <count>``.
- Kill all: ``A`` without fds: SIGKILL every process of the sandbox but the init and wait until
  they are gone (at most 5 s); reply ``OK <left>``, how many could not be killed.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import select
import selectors
import signal as _signal
import socket
import struct
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from rockroll.errors import ExecError, InvalidArgument, SandboxClosed, SandboxError
from rockroll.sandbox.types import ExecResult

MAX_PAYLOAD = 16 << 20
KILL_GRACE = 2.0  # seconds to wait for the exit report after the timeout kill
START_TIMEOUT = 30.0  # seconds to wait for the init to report that a command started
_CHUNK = 1 << 16
_DRAIN_LIMIT = 4 << 20  # bytes read per stream after exit: a background job may keep writing

Status = tuple[int, int]
OutputCallback = Callable[[str, bytes], None]


@dataclass(frozen=True)
class User:
    """Ids a command runs as, inside the sandbox."""

    uid: int
    gid: int
    groups: tuple[int, ...] = ()


def _fields(*parts: str | bytes) -> bytes:
    out = bytearray()
    for part in parts:
        raw = os.fsencode(part)
        if b"\0" in raw:
            raise InvalidArgument(f"NUL byte in command field {part!r}")
        out += raw + b"\0"
    return bytes(out)


def _exec_payload(
    argv: Sequence[str], cwd: str, env: Mapping[str, str] | None, user: User | None = None
) -> bytes:
    if not argv:
        raise InvalidArgument("argv must name a program")
    env = env or {}
    if any("=" in k or not k for k in env):
        raise InvalidArgument("environment names must be non-empty and contain no '='")
    entries = [f"{k}={v}" for k, v in env.items()]
    payload = _fields("X", cwd, str(len(argv)), *argv, str(len(entries)), *entries)
    if user is not None:
        groups = [str(g) for g in user.groups]
        payload += _fields("U", str(user.uid), str(user.gid), str(len(groups)), *groups)
    if len(payload) > MAX_PAYLOAD:
        raise InvalidArgument(f"command and environment exceed {MAX_PAYLOAD} bytes")
    return struct.pack("<I", len(payload)) + payload


def _connect(sock_path: str | os.PathLike[str]) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(os.fspath(sock_path))
    except OSError as e:
        sock.close()
        raise SandboxClosed(f"cannot connect to sandbox socket {sock_path}: {e.strerror}") from e
    return sock


def _wait_readable(sock: socket.socket, timeout: float | None) -> bool:
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(None if timeout is None else max(0, timeout) * 1000))


def _exec_error(line: str, argv: Sequence[str], cwd: str) -> ExecError:
    _, err, step, message = [*line.split(" ", 3), "", "", ""][:4]
    if step == "chdir":
        return ExecError(f"cwd {cwd}: {message}")
    if step == "exec" and err == str(errno.ENOSYS):
        return ExecError(
            f"{argv[0]}: {message}: the sandbox's monitor is gone, and a watched sandbox runs "
            "nothing unwatched; close it and create a new one"
        )
    if step == "exec" and err == str(errno.EPERM):
        return ExecError(f"{argv[0]}: {message} (a rule of the monitor may have refused it: see "
                         "the sandbox's events)")  # fmt: skip
    if step == "exec":
        return ExecError(f"{argv[0]}: {message}")
    return ExecError(f"sandbox init refused the command ({step}, errno {err}): {message}")


class Process:
    """A command started by `spawn`; the connection to the init reports its exit.

    Closing it (or the caller dying) before the command exits kills its process group.
    """

    def __init__(self, sock: socket.socket, stdin_fd: int, stdout_fd: int, stderr_fd: int) -> None:
        self.sock = sock
        self.pid = 0
        self.stdin: io.FileIO | None = io.FileIO(stdin_fd, "wb", closefd=True)
        self.stdout_fd = stdout_fd
        self.stderr_fd = stderr_fd
        self.status: Status | None = None
        self._buf = b""
        self._eof = False

    def __enter__(self) -> Process:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _start(self, timeout: float, argv: Sequence[str], cwd: str) -> None:
        line = self._line(time.monotonic() + timeout)
        if line is None:
            raise SandboxClosed(f"sandbox init did not report the start within {timeout:g}s")
        if line.startswith("P "):
            self.pid = int(line[2:])
            self.sock.setblocking(False)
            return
        if line.startswith("E "):
            raise _exec_error(line, argv, cwd)
        raise SandboxClosed(f"sandbox init closed the connection ({line or 'no reply'})")

    def _line(self, deadline: float | None) -> str | None:
        """The next reply line, "" at EOF, None when the deadline passed first."""
        while b"\n" not in self._buf:
            if self._eof:
                return ""
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not _wait_readable(self.sock, remaining):
                return None
            self._recv()
        line, _, self._buf = self._buf.partition(b"\n")
        return line.decode(errors="replace")

    def _recv(self) -> None:
        try:
            data = self.sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        self._buf += data
        self._eof = not data

    def _feed(self, deadline: float | None) -> Status | None:
        if self.status is None:
            line = self._line(deadline)
            if line == "":
                raise SandboxClosed("sandbox init closed the connection without an exit report")
            if line is not None and line.startswith("X "):
                code, sig = line[2:].split()
                self.status = (int(code), int(sig))
        return self.status

    def kill(self, sig: int = _signal.SIGKILL) -> None:
        """Send `sig` to the command's whole process group."""
        if self.status is None:
            with contextlib.suppress(OSError):
                self.sock.send(f"K {int(sig)}\n".encode())

    def poll(self) -> Status | None:
        """(exit code, signal) if the command has exited, else None; never blocks."""
        return self.wait(0)

    def wait(self, timeout: float | None = None) -> Status | None:
        """(exit code, signal) once the command exits, None if `timeout` seconds pass first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._feed(deadline) is None:
            if deadline is not None and time.monotonic() >= deadline:
                return None
        return self.status

    def close_stdin(self) -> None:
        if self.stdin is not None:
            self.stdin.close()
            self.stdin = None

    def close(self) -> None:
        """Release the pipes and the connection (killing the command if still running)."""
        self.close_stdin()
        for fd in (self.stdout_fd, self.stderr_fd):
            with contextlib.suppress(OSError):
                os.close(fd)
        self.stdout_fd = self.stderr_fd = -1
        self.sock.close()


def spawn(
    sock_path: str | os.PathLike[str],
    argv: Sequence[str],
    *,
    cwd: str = "/",
    env: Mapping[str, str] | None = None,
    start_timeout: float = START_TIMEOUT,
    user: User | None = None,
) -> Process:
    """Start `argv` in the sandbox whose init listens on `sock_path`.

    `env` is the command's whole environment (None: empty; the init then searches a default
    PATH). Raises ExecError if the command cannot start, SandboxClosed if the init is gone.
    """
    request = _exec_payload(argv, cwd, env, user)
    sock = _connect(sock_path)
    (in_r, in_w), (out_r, out_w), (err_r, err_w) = (os.pipe2(os.O_CLOEXEC) for _ in range(3))
    proc = Process(sock, in_w, out_r, err_r)
    try:
        sent = socket.send_fds(sock, [request], [in_r, out_w, err_w])
        if sent < len(request):  # the init may already have answered and closed otherwise
            sock.sendall(request[sent:])
    except OSError as e:
        proc.close()
        raise SandboxClosed(f"sandbox socket {sock_path}: {e.strerror}") from e
    finally:
        for fd in (in_r, out_w, err_w):
            os.close(fd)
    try:
        proc._start(start_timeout, argv, cwd)
    except BaseException:
        proc.close()
        raise
    return proc


class CappedBuffer:
    """Keeps the first and last `limit // 2` bytes of a stream."""

    def __init__(self, limit: int) -> None:
        self.half = limit // 2
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0

    def add(self, data: bytes) -> None:
        self.total += len(data)
        room = self.half - len(self.head)
        if room > 0:
            self.head += data[:room]
            data = data[room:]
        self.tail += data
        if len(self.tail) > self.half:
            del self.tail[: len(self.tail) - self.half]

    @property
    def dropped(self) -> int:
        return self.total - len(self.head) - len(self.tail)

    def text(self) -> str:
        head = self.head.decode(errors="replace")
        tail = self.tail.decode(errors="replace")
        if not self.dropped:
            return (self.head + self.tail).decode(errors="replace")
        return f"{head}\n[... {self.dropped} bytes truncated ...]\n{tail}"


class _Pump:
    """Feeds stdin and collects stdout/stderr of one Process until it exits or times out."""

    def __init__(self, proc: Process, stdin: bytes | None, limit: int, cb: OutputCallback | None):
        self.proc = proc
        self.cb = cb
        self.sel = selectors.PollSelector()
        self.streams = {proc.stdout_fd: "stdout", proc.stderr_fd: "stderr"}
        self.caps = {"stdout": CappedBuffer(limit), "stderr": CappedBuffer(limit)}
        for fd in self.streams:
            os.set_blocking(fd, False)
            self.sel.register(fd, selectors.EVENT_READ)
        self.sel.register(proc.sock, selectors.EVENT_READ)
        self.pending = memoryview(stdin or b"")
        if self.pending and proc.stdin is not None:
            os.set_blocking(proc.stdin.fileno(), False)
            self.sel.register(proc.stdin.fileno(), selectors.EVENT_WRITE)
        else:
            proc.close_stdin()

    def run(self, deadline: float | None) -> tuple[Status | None, bool]:
        """Pump until the exit report; at `deadline` kill the group and wait KILL_GRACE more."""
        timed_out, give_up = False, None
        self.proc.poll()  # the exit report may have come with the start report
        while self.proc.status is None:
            now = time.monotonic()
            if deadline is not None and now >= deadline and not timed_out:
                self.proc.kill(_signal.SIGKILL)
                timed_out, give_up = True, now + KILL_GRACE
            if give_up is not None and now >= give_up:
                break
            wake = give_up if timed_out else deadline
            for key, _ in self.sel.select(None if wake is None else max(0.0, wake - now)):
                if not self._event(key.fd, timed_out):
                    return self.proc.status, timed_out
        self._drain()
        return self.proc.status, timed_out

    def _event(self, fd: int, timed_out: bool) -> bool:
        """Handle one ready fd; False when the init vanished after our kill."""
        if fd in self.streams:
            self._read(fd)
        elif fd == self.proc.sock.fileno():
            try:
                self.proc.poll()
            except SandboxClosed:
                if not timed_out:
                    raise
                return False
        else:
            self._write()
        return True

    def _read(self, fd: int) -> int:
        try:
            data = os.read(fd, _CHUNK)
        except BlockingIOError:
            return -1
        if not data:
            self.sel.unregister(fd)
            del self.streams[fd]
            return 0
        name = self.streams[fd]
        self.caps[name].add(data)
        if self.cb is not None:
            self.cb(name, data)
        return len(data)

    def _write(self) -> None:
        assert self.proc.stdin is not None
        fd = self.proc.stdin.fileno()
        try:
            self.pending = self.pending[os.write(fd, self.pending[:_CHUNK]) :]
        except BlockingIOError:
            return
        except OSError as e:
            if e.errno != errno.EPIPE:
                raise
            self.pending = memoryview(b"")
        if not self.pending:
            self.sel.unregister(fd)
            self.proc.close_stdin()

    def _drain(self) -> None:
        """Take what the command left in the pipes without waiting for EOF."""
        for fd in list(self.streams):
            budget = _DRAIN_LIMIT
            while budget > 0 and (n := self._read(fd)) > 0:
                budget -= n
        self.sel.close()

    def result(self, status: Status | None, timed_out: bool, duration: float) -> ExecResult:
        code, sig = status if status is not None else (128 + _signal.SIGKILL, _signal.SIGKILL)
        out, err = self.caps["stdout"], self.caps["stderr"]
        return ExecResult(
            exit_code=code,
            stdout=out.text(),
            stderr=err.text(),
            duration=duration,
            timed_out=timed_out,
            truncated=bool(out.dropped or err.dropped),
            signal=sig or None,
        )


def run(
    sock_path: str | os.PathLike[str],
    argv: Sequence[str],
    *,
    cwd: str = "/",
    env: Mapping[str, str] | None = None,
    stdin: bytes | None = None,
    timeout: float | None = None,
    max_output: int = 1 << 20,
    on_output: OutputCallback | None = None,
    user: User | None = None,
) -> ExecResult:
    """Run `argv` to completion in the sandbox and collect its output.

    Output beyond `max_output` bytes per stream keeps head and tail. `on_output(stream, chunk)`
    sees every chunk as it arrives. At `timeout` the command and everything it started get
    SIGKILL and the result has timed_out=True; the call returns at most KILL_GRACE seconds
    later regardless.
    """
    if max_output < 0:
        raise InvalidArgument(f"max_output must be >= 0, got {max_output}")
    if timeout is not None and timeout < 0:
        raise InvalidArgument(f"timeout must be >= 0, got {timeout}")
    start = time.monotonic()
    start_timeout = START_TIMEOUT if timeout is None else timeout + KILL_GRACE
    with spawn(sock_path, argv, cwd=cwd, env=env, start_timeout=start_timeout, user=user) as proc:
        pump = _Pump(proc, stdin, max_output, on_output)
        status, timed_out = pump.run(None if timeout is None else start + timeout)
    return pump.result(status, timed_out, time.monotonic() - start)


@dataclass(frozen=True)
class Mark:
    """A point in a sandbox's process history (see `mark`)."""

    ticks: int
    last_pid: int


def mark(sock_path: str | os.PathLike[str]) -> Mark:
    """The sandbox's process history now: what `signal_descendants(since=)` spares as older."""
    reply = _ask(sock_path, _fields("M"), START_TIMEOUT)
    parts = reply.split()
    if len(parts) != 3 or parts[0] != "OK":
        raise SandboxError(f"marking the sandbox's processes failed: {reply or 'no reply'}")
    return Mark(int(parts[1]), int(parts[2]))


def signal_descendants(
    sock_path: str | os.PathLike[str],
    root_pid: int,
    sig: int,
    exempt_pgids: Sequence[int] = (),
    since: Mark | None = None,
) -> int:
    """Signal every descendant of `root_pid` (not itself) outside `exempt_pgids` that is newer
    than the mark `since` (None: any); the count."""
    payload = _fields("D", str(int(sig)), str(int(root_pid)), str(len(exempt_pgids)))
    payload += _fields(*(str(int(p)) for p in exempt_pgids))
    mark_ = since or Mark(0, 0)
    payload += _fields(str(mark_.ticks), str(mark_.last_pid))
    reply = _ask(sock_path, payload, START_TIMEOUT)
    if not reply.startswith("OK "):
        raise SandboxError(f"signalling descendants of {root_pid} failed: {reply or 'no reply'}")
    return int(reply[3:])


def kill_all(sock_path: str | os.PathLike[str]) -> int:
    """SIGKILL every process of the sandbox but its init; how many survived (0 normally)."""
    reply = _ask(sock_path, _fields("A"), START_TIMEOUT + 5)
    if not reply.startswith("OK "):
        raise SandboxError(f"killing the sandbox's processes failed: {reply or 'no reply'}")
    return int(reply[3:])


def _ask(sock_path: str | os.PathLike[str], payload: bytes, timeout: float) -> str:
    """One request without fds; its one-line reply."""
    with _connect(sock_path) as sock:
        sock.sendall(struct.pack("<I", len(payload)) + payload)
        sock.settimeout(timeout)
        try:
            return sock.makefile("rb").readline().decode(errors="replace").strip()
        except OSError as e:
            raise SandboxClosed(f"sandbox socket {sock_path}: {e}") from e
