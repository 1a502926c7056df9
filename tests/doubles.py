"""Test doubles of the sandbox interface.

`DirSandbox` is a `Sandbox` whose "inside" is a temporary directory of the host: commands run
there with `subprocess` as the calling user, without isolation and without root (like SWE-ReX's
dummy runtime), so code written against `Sandbox` (the agent's tools, its loop) can be tested
anywhere. File calls map sandbox paths into the directory (`/work/a.txt` is `ROOT/work/a.txt`),
and so do the working directories of commands; a command that names an absolute path sees the
host's, so tests cross-check with paths relative to the working directory.
"""

from __future__ import annotations

import contextlib
import io
import os
import secrets
import selectors
import shutil
import signal
import stat
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from rockroll.errors import InvalidArgument, SandboxClosed, TooLarge
from rockroll.sandbox.base import (
    DEFAULT_TIMEOUT,
    Command,
    OutputCallback,
    Sandbox,
    Session,
    Snapshot,
    check_command,
    check_data,
    check_stdin,
    command_text,
)
from rockroll.sandbox.checks import check_env, check_timeout
from rockroll.sandbox.files import MAX_READ, sandbox_path
from rockroll.sandbox.spec import SandboxSpec
from rockroll.sandbox.trees import MAX_TREE
from rockroll.sandbox.types import ExecResult, FileInfo

_GRACE = 2.0


def _exit_code(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode


def _kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


class DirSession(Session):
    """One persistent `bash` on the host, in the sandbox's directory. A timeout ends the shell
    (the next `run` raises SandboxClosed, as after `exit`: the agent's bash tool opens a new
    one then)."""

    def __init__(self, sandbox: DirSandbox, cwd: Path, env: dict[str, str]) -> None:
        self._sandbox = sandbox
        self._proc = subprocess.Popen(
            ["bash", "--noprofile", "--norc"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=cwd,
            env=env,
            start_new_session=True,
        )
        self._dead: str | None = None

    @property
    def alive(self) -> bool:
        return self._dead is None

    def run(self, cmd: str, *, timeout: float | None = DEFAULT_TIMEOUT) -> ExecResult:
        if not isinstance(cmd, str):
            raise InvalidArgument(f"cmd must be a string, got {type(cmd).__name__}")
        check_timeout(timeout)
        if self._dead:
            raise SandboxClosed(self._dead)
        tag = "__DIR_" + secrets.token_hex(8)
        script = (
            f"eval \"$(cat <<'{tag}'\n{cmd}\n{tag}\n)\" </dev/null; "
            f"printf '\\n{tag} %d\\n' \"$?\"; printf '\\n{tag}\\n' >&2\n"
        )
        started = time.monotonic()
        try:
            assert self._proc.stdin is not None
            self._proc.stdin.write(script.encode())
            self._proc.stdin.flush()
        except (BrokenPipeError, OSError):
            self._dead = "the session's shell has exited; open a new session"
            raise SandboxClosed(self._dead) from None
        out, err, code, timed_out = self._collect(tag, timeout)
        result = ExecResult(
            exit_code=code,
            stdout=out.decode(errors="replace"),
            stderr=err.decode(errors="replace"),
            duration=time.monotonic() - started,
            timed_out=timed_out,
        )
        self._sandbox.log_command(cmd, result)
        return result

    def _collect(self, tag: str, timeout: float | None) -> tuple[bytes, bytes, int, bool]:
        """Both streams up to their end markers: (stdout, stderr, exit code, timed out)."""
        assert self._proc.stdout is not None and self._proc.stderr is not None
        out_fd, err_fd = self._proc.stdout.fileno(), self._proc.stderr.fileno()
        markers = {out_fd: f"\n{tag} ".encode(), err_fd: f"\n{tag}\n".encode()}
        raw = {fd: bytearray() for fd in markers}
        done: dict[int, int] = {}
        deadline = None if timeout is None else time.monotonic() + timeout
        with selectors.DefaultSelector() as sel:
            for fd in markers:
                sel.register(fd, selectors.EVENT_READ)
            while len(done) < len(markers):
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    self._end("the session was ended at a command's timeout; open a new one")
                    return bytes(raw[out_fd]), bytes(raw[err_fd]), 137, True
                for key, _ in sel.select(left):
                    chunk = os.read(key.fd, 65536)
                    raw[key.fd] += chunk
                    idx = raw[key.fd].find(markers[key.fd])
                    trailer = raw[key.fd][idx + len(markers[key.fd]) :]
                    if key.fd == out_fd and idx >= 0 and b"\n" not in trailer:
                        idx = -1  # the marker's line (with the exit code) is not all here yet
                    if not chunk or idx >= 0:
                        sel.unregister(key.fd)
                        done[key.fd] = idx if chunk else -1
        out, err = raw[out_fd], raw[err_fd]
        if done[out_fd] < 0:  # the shell exited (`exit N`)
            self._dead = "the session's shell has exited (e.g. after `exit`); open a new one"
            return bytes(out), bytes(err), _exit_code(self._proc.wait(_GRACE)), False
        code = int(out[done[out_fd] + len(markers[out_fd]) :].split(b"\n", 1)[0] or b"1")
        return bytes(out[: done[out_fd]]), bytes(err[: max(done[err_fd], 0)]), code, False

    def _end(self, why: str) -> None:
        self._dead = self._dead or why
        _kill_group(self._proc)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._proc.wait(_GRACE)

    def close(self) -> None:
        self._end("the session is closed; open a new one with sandbox.session()")
        for pipe in (self._proc.stdin, self._proc.stdout, self._proc.stderr):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()


class DirSnapshot(Snapshot):
    """A copy of a `DirSandbox`'s directory."""

    def __init__(self, copy: Path, source: DirSandbox) -> None:
        self._dir = copy
        self._id = "snap-" + copy.name
        self._source = source

    @property
    def id(self) -> str:
        return self._id

    @property
    def source(self) -> str:
        return self._source.id

    def fork(self, **overrides: Any) -> DirSandbox:
        if set(overrides) - {"env", "workdir"}:
            raise InvalidArgument(f"a DirSandbox fork takes env and workdir, got {overrides}")
        if not self._dir.exists():
            raise SandboxClosed(f"snapshot {self.id} was removed")
        spec = self._source.spec.model_copy(update=overrides)
        return DirSandbox(spec=spec, copy_of=self._dir)

    def remove(self) -> None:
        shutil.rmtree(self._dir, ignore_errors=True)


class DirSandbox(Sandbox):
    """A `Sandbox` in a temporary directory of the host (see the module's docstring)."""

    def __init__(
        self,
        *,
        workdir: str = "/work",
        env: dict[str, str] | None = None,
        spec: SandboxSpec | None = None,
        copy_of: Path | None = None,
    ) -> None:
        self._spec = spec or SandboxSpec(
            image="host-dir", workdir=workdir, env=check_env(env), disk=None, memory=None
        )
        self.root = Path(tempfile.mkdtemp(prefix="rockroll-dir-"))
        if copy_of is not None:
            shutil.copytree(copy_of, self.root, symlinks=True, dirs_exist_ok=True)
        self._id = "dir-" + self.root.name.removeprefix("rockroll-dir-")
        self._closed = False
        self._audit: list[dict] = []
        self._sessions: list[DirSession] = []
        self.host_path(self._spec.workdir).mkdir(parents=True, exist_ok=True)

    @property
    def id(self) -> str:
        return self._id

    @property
    def spec(self) -> SandboxSpec:
        return self._spec

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.kill_all()
            shutil.rmtree(self.root, ignore_errors=True)

    def host_path(self, path: object) -> Path:
        """Where a path of the sandbox lies on the host."""
        return self.root / self.path(path).lstrip("/")

    def log_command(self, command: str, result: ExecResult) -> None:
        """Add a command's result to the audit log."""
        self._audit.append(
            {
                "time": time.time(),
                "command": command,
                "exit_code": result.exit_code,
                "duration": round(result.duration, 6),
                "timed_out": result.timed_out,
            }
        )

    def _env(self, env: dict[str, str] | None) -> dict[str, str]:
        base = self._spec.base_env() | {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        return base | {"HOME": str(self.root / "root")} | check_env(env)

    # -- commands ------------------------------------------------------------------------------
    def exec(
        self,
        cmd: Command,
        *,
        timeout: float | None = DEFAULT_TIMEOUT,
        cwd: str | None = None,
        env: dict[str, str] | None = None,
        stdin: bytes | str | None = None,
        on_output: OutputCallback | None = None,
        user: str | int | None = None,
    ) -> ExecResult:
        self.check_open()
        cmd = check_command(cmd)
        check_timeout(timeout)
        data = check_stdin(stdin)
        if user is not None:
            raise InvalidArgument("a DirSandbox runs every command as the calling user")
        argv = ["bash", "-c", cmd] if isinstance(cmd, str) else cmd
        started = time.monotonic()
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=self.host_path(cwd or self._spec.workdir),
            env=self._env(env),
            start_new_session=True,
        )
        timed_out = False
        try:
            out, err = proc.communicate(data, timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_group(proc)
            out, err = proc.communicate()
        _kill_group(proc)  # what it left running in the background goes too
        result = ExecResult(
            exit_code=137 if timed_out else _exit_code(proc.returncode),
            stdout=out.decode(errors="replace"),
            stderr=err.decode(errors="replace"),
            duration=time.monotonic() - started,
            timed_out=timed_out,
        )
        if on_output is not None:
            for stream, chunk in (("stdout", out), ("stderr", err)):
                if chunk:
                    on_output(stream, chunk)
        self.log_command(command_text(cmd), result)
        return result

    def session(
        self,
        *,
        cwd: str | None = None,
        env: dict[str, str] | None = None,
        user: str | int | None = None,
    ) -> DirSession:
        self.check_open()
        if user is not None:
            raise InvalidArgument("a DirSandbox runs every command as the calling user")
        session = DirSession(self, self.host_path(cwd or self._spec.workdir), self._env(env))
        self._sessions = [s for s in self._sessions if s.alive] + [session]
        return session

    def kill_all(self) -> int:
        for session in self._sessions:
            session.close()
        self._sessions = []
        return 0

    def audit_log(self) -> list[dict]:
        return list(self._audit)

    def events(self) -> list[dict]:
        return []  # a folder runs host programs: nothing watches them

    def set_network(self, network: str | dict[str, Any]) -> None:
        raise InvalidArgument("a folder sandbox has the host's network; it cannot change")

    # -- files ---------------------------------------------------------------------------------
    def read_bytes(self, path: str, max_bytes: int | None = MAX_READ) -> bytes:
        where = self.host_path(path)
        if not where.is_file():
            if where.is_dir():
                raise IsADirectoryError(f"{path} is a directory")
            raise FileNotFoundError(f"no such file in the sandbox: {path!r}")
        if max_bytes is not None and where.stat().st_size > max_bytes:
            raise TooLarge(f"{path} is over the {max_bytes}-byte read limit")
        return where.read_bytes()

    def write_bytes(self, path: str, data: bytes, mode: int = 0o644) -> None:
        where = self.host_path(path)
        where.parent.mkdir(parents=True, exist_ok=True)
        where.write_bytes(check_data(data))
        where.chmod(mode)

    def list_dir(self, path: str = ".") -> list[FileInfo]:
        base = self.path(path)
        found = []
        for entry in sorted(self.host_path(path).iterdir()):
            st = entry.lstat()
            found.append(
                FileInfo(
                    path=str(PurePosixPath(base) / entry.name),
                    name=entry.name,
                    is_dir=stat.S_ISDIR(st.st_mode),
                    size=st.st_size,
                    mode=stat.S_IMODE(st.st_mode),
                    mtime=st.st_mtime,
                )
            )
        return found

    def remove(self, path: str) -> bool:
        if sandbox_path(path, self._spec.workdir) == "/":
            raise InvalidArgument("refusing to remove the sandbox's root directory")
        where = self.host_path(path)
        if where.is_dir() and not where.is_symlink():
            shutil.rmtree(where)
            return True
        if where.is_symlink() or where.exists():
            where.unlink()
            return True
        return False

    def exists(self, path: str) -> bool:
        return self.host_path(path).exists()

    def is_dir(self, path: str) -> bool:
        where = self.host_path(path)
        if not where.exists():
            raise FileNotFoundError(f"no such file or directory in the sandbox: {path!r}")
        return where.is_dir()

    def write_tar(self, path: str, out: BinaryIO, max_bytes: int | None = MAX_TREE) -> None:
        where = self.host_path(path)
        if max_bytes is not None:
            total = sum(p.stat().st_size for p in where.rglob("*") if p.is_file())
            if total > max_bytes:
                raise TooLarge(f"{path} holds {total} bytes, over the {max_bytes}-byte limit")
        with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            for child in sorted(where.iterdir()):
                tar.add(child, arcname=child.name)

    def write_tree(
        self, path: str, archive: bytes | BinaryIO, *, owner: str | int | None = None
    ) -> None:
        if owner is not None:
            raise InvalidArgument("a DirSandbox's files all belong to the calling user")
        fileobj = io.BytesIO(archive) if isinstance(archive, bytes | bytearray) else archive
        where = self.host_path(path)
        where.mkdir(parents=True, exist_ok=True)
        with tarfile.open(fileobj=fileobj, mode="r|*") as tar:
            tar.extractall(where, filter="data")

    # -- snapshots -----------------------------------------------------------------------------
    def snapshot(self) -> DirSnapshot:
        self.check_open()
        copy = Path(tempfile.mkdtemp(prefix="rockroll-dirsnap-"))
        shutil.copytree(self.root, copy, symlinks=True, dirs_exist_ok=True)
        return DirSnapshot(copy, self)

    def fork(self, **overrides: Any) -> DirSandbox:
        snap = self.snapshot()
        try:
            return snap.fork(**overrides)
        finally:
            snap.remove()
