"""The one way in: `Sandbox` (and `AsyncSandbox`), whatever backend runs it.

with Sandbox.create(memory="1g") as sb:
    print(sb.exec("python3 --version").stdout)
"""

from __future__ import annotations

import asyncio
import functools
import io
import os
import tarfile
import tempfile
import time
from collections.abc import Callable, Generator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from rockroll.sandbox import accounts, protocol
from rockroll.sandbox.checks import check_cap, check_env, check_timeout
from rockroll.sandbox.errors import AccessDenied, InvalidArgument, SandboxClosed
from rockroll.sandbox.files import MAX_READ, sandbox_path
from rockroll.sandbox.runtime import LocalRuntime, local_runtime
from rockroll.sandbox.session import Session
from rockroll.sandbox.spec import SandboxSpec, make_spec
from rockroll.sandbox.state import SandboxRecord, SnapshotRecord, read_audit
from rockroll.sandbox.streams import OutputStream
from rockroll.sandbox.trees import MAX_TREE, extract_tar, write_tar
from rockroll.sandbox.types import ExecResult, FileInfo

DEFAULT_TIMEOUT = 600.0
OutputCallback = Callable[[str, bytes], None]


def server_settings(server: str | None, token: str | None) -> tuple[str, str] | None:
    """(url, token) from the arguments or ROCKROLL_SERVER / ROCKROLL_TOKEN; None: run locally."""
    url = server or os.environ.get("ROCKROLL_SERVER")
    if not url:
        return None
    secret = token or os.environ.get("ROCKROLL_TOKEN")
    if not secret:
        raise AccessDenied(
            f"server {url} needs a token: pass token=... or set ROCKROLL_TOKEN "
            "(create one with `rockroll token create NAME`)"
        )
    if not url.startswith(("http://", "https://")):
        raise InvalidArgument(f"server must be a URL like http://127.0.0.1:8321, got {url!r}")
    return url.rstrip("/"), secret


class Snapshot:
    """A sandbox's filesystem frozen in time; `fork()` starts new sandboxes from it."""

    def __init__(self, record: SnapshotRecord, spec: SandboxSpec) -> None:
        self.record = record
        self._spec = spec

    @property
    def id(self) -> str:
        return self.record.id

    def fork(self, **overrides: Any) -> Sandbox:
        """A new sandbox whose files are this snapshot's; settings default to the source's."""
        settings = self._spec.model_dump() | overrides | {"image": self.id}
        return Sandbox.create(**settings)

    def remove(self) -> None:
        local_runtime().remove_snapshot(self.id)

    def __repr__(self) -> str:
        return f"Snapshot({self.id!r}, source={self.record.source!r})"


class Sandbox:
    """An isolated Linux environment: run commands, move files, snapshot and fork."""

    def __init__(self, record: SandboxRecord, runtime: LocalRuntime) -> None:
        self._rec = record
        self._runtime = runtime
        self._fs = runtime.rootfs(record)
        self._closed = False

    # -- lifecycle ---------------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        image: str | Snapshot | Any = "base",
        *,
        memory: int | str | None = "2g",
        cpus: float | None = 1.0,
        pids: int | None = 1024,
        network: str = "none",
        env: dict[str, str] | None = None,
        workdir: str = "/",
        ttl: float | None = None,
        backend: str = "bwrap",
        max_output: int = 1 << 20,
        detached: bool = False,
        profile: str = "agent",
        labels: dict[str, str] | None = None,
        disk: int | str | None = "10g",
        inodes: int | None = None,
        server: str | None = None,
        token: str | None = None,
    ) -> Sandbox:
        """Start a sandbox; use it as a context manager so `close()` always runs.

        `disk` bounds what it may write (its own filesystem of that size: writes past it fail
        with ENOSPC inside; None: no limit), `inodes` how many files. With `server` (or
        `ROCKROLL_SERVER`) the sandbox runs on that `rockroll serve`, reached with `token` (or
        `ROCKROLL_TOKEN`); the object behaves the same.
        """
        settings: dict[str, Any] = {
            "image": image if isinstance(image, str) else image.id,
            "memory": memory,
            "cpus": cpus,
            "pids": pids,
            "network": network,
            "env": env or {},
            "workdir": workdir,
            "ttl": ttl,
            "max_output": max_output,
            "labels": labels or {},
            "disk": disk,
            "inodes": inodes,
        }
        remote = server_settings(server, token)
        if remote is not None:
            from rockroll.sandbox.remote import RemoteSandbox

            if backend != "bwrap" or profile != "agent" or detached:
                raise InvalidArgument(
                    "backend, profile and detached are the server's choice; leave them unset "
                    "when creating a sandbox through a server"
                )
            return RemoteSandbox.create_remote(*remote, **settings)
        spec = make_spec(**settings, backend=backend, detached=detached, profile=profile)
        runtime = local_runtime()
        return cls(runtime.create(spec), runtime)

    @classmethod
    def connect(
        cls, sandbox_id: str, *, server: str | None = None, token: str | None = None
    ) -> Sandbox:
        """Attach to a running sandbox by id (e.g. one made by `rockroll sandbox create`)."""
        remote = server_settings(server, token)
        if remote is not None:
            from rockroll.sandbox.remote import RemoteSandbox

            return RemoteSandbox.connect_remote(*remote, sandbox_id)
        runtime = local_runtime()
        return cls(runtime.get(sandbox_id), runtime)

    @property
    def id(self) -> str:
        return self._rec.id

    @property
    def spec(self) -> SandboxSpec:
        return self._rec.spec

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Kill every process and remove the overlay, cgroups and socket. Safe to call twice."""
        if not self._closed:
            self._closed = True
            self._runtime.close(self.id)

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"Sandbox({self.id!r}, image={self._rec.image!r}, {state})"

    # -- commands ------------------------------------------------------------------------------
    def exec(
        self,
        cmd: str | list[str],
        *,
        timeout: float | None = DEFAULT_TIMEOUT,
        cwd: str | None = None,
        env: dict[str, str] | None = None,
        stdin: bytes | str | None = None,
        on_output: OutputCallback | None = None,
        user: str | int | None = None,
    ) -> ExecResult:
        """Run `cmd` (a string for bash, or an argv list) and wait for it.

        A timeout kills the command and everything it started (`setsid` ones included).
        `on_output(stream, chunk)` receives output as it arrives; the result keeps the head
        and tail of each stream. `user` ("app", "1000", "app:staff") runs it as that user of
        the sandbox (HOME from its passwd entry) instead of root.
        """
        self._check_open()
        argv = self._argv(cmd)
        check_timeout(timeout)
        data = stdin.encode() if isinstance(stdin, str) else stdin
        if data is not None and not isinstance(data, bytes):
            raise InvalidArgument(f"stdin must be bytes or str, got {type(stdin).__name__}")
        ids, env_all = self._identity(user)
        return self._runtime.exec(
            self._rec,
            argv,
            command=cmd if isinstance(cmd, str) else " ".join(cmd),
            cwd=sandbox_path(cwd, self.spec.workdir) if cwd else self.spec.workdir,
            env=env_all | check_env(env),
            stdin=data,
            timeout=timeout,
            on_output=on_output,
            user=ids,
        )

    def _identity(self, user: str | int | None) -> tuple[protocol.User | None, dict[str, str]]:
        """The ids a command of `user` runs as (None: root) and its base environment (HOME from
        the user's passwd entry)."""
        if user is None:
            return None, self.spec.base_env()
        account = accounts.resolve(self._fs, user)
        return account.user, self.spec.base_env() | {"HOME": account.home}

    def kill_all(self) -> int:
        """SIGKILL every process of the sandbox (background jobs, daemons, sessions' shells):
        what runs next, a verifier say, runs alone. How many could not be killed (0 but for
        processes stuck in the kernel)."""
        self._check_open()
        return self._runtime.kill_all(self._rec)

    def stream(
        self, cmd: str | list[str], *, timeout: float | None = DEFAULT_TIMEOUT, **kwargs: Any
    ) -> Generator[tuple[str, str], None, ExecResult]:
        """Yield (stream, text) chunks as they arrive; the generator returns the ExecResult.

        A reader that falls behind stalls the command, not the host's memory (see
        `open_stream`); closing the generator early kills the command.
        """
        output = self.open_stream(cmd, timeout=timeout, **kwargs)
        try:
            while (item := output.next_chunk()) is not None:
                yield item[0], item[1].decode(errors="replace")
        finally:
            output.close()
        if output.error is not None:
            raise output.error
        assert output.result is not None
        return output.result

    def open_stream(
        self, cmd: str | list[str], *, timeout: float | None = DEFAULT_TIMEOUT, **kwargs: Any
    ) -> OutputStream:
        """Start `cmd` and return its output as an `OutputStream` (`next_chunk`, `close`)."""
        check_timeout(timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        return OutputStream(
            lambda on_output: self.exec(cmd, timeout=timeout, on_output=on_output, **kwargs),
            deadline,
        )

    def session(
        self,
        *,
        cwd: str | None = None,
        env: dict[str, str] | None = None,
        user: str | int | None = None,
    ) -> Session:
        """A persistent bash: `cd`, exports and background jobs survive between commands.
        `user` runs it as that user of the sandbox (see `exec`)."""
        self._check_open()
        ids, env_all = self._identity(user)
        return Session(
            self._runtime,
            self._rec,
            cwd=sandbox_path(cwd, self.spec.workdir) if cwd else self.spec.workdir,
            env=env_all | check_env(env),
            user=ids,
        )

    def audit_log(self) -> list[dict]:
        """Every command run in this sandbox: time, command, exit code, duration."""
        return read_audit(self.id)

    def _argv(self, cmd: object) -> list[str]:
        if isinstance(cmd, str):
            return ["/bin/bash", "-c", cmd] if self._has_bash() else ["/bin/sh", "-c", cmd]
        if isinstance(cmd, list | tuple) and cmd and all(isinstance(a, str) for a in cmd):
            return list(cmd)
        raise InvalidArgument(
            f"cmd must be a string (run by bash -c) or a non-empty list of strings (an argv), "
            f"got {type(cmd).__name__}: {cmd!r}"
        )

    def _has_bash(self) -> bool:
        if not hasattr(self, "_bash"):
            self._bash = self._fs.exists("/bin/bash")
        return self._bash

    def _check_open(self) -> None:
        if self._closed:
            raise SandboxClosed(f"sandbox {self.id} is closed; create a new one")

    # -- files ---------------------------------------------------------------------------------
    def _path(self, path: object) -> str:
        self._check_open()
        return sandbox_path(path, self.spec.workdir)

    def read_bytes(self, path: str, max_bytes: int | None = MAX_READ) -> bytes:
        """A regular file's bytes; TooLarge (checked before reading) past `max_bytes`."""
        return self._fs.read_bytes(self._path(path), check_cap(max_bytes, "max_bytes"))

    def open_read(self, path: str, max_bytes: int | None = MAX_READ) -> tuple[BinaryIO, int]:
        """(file object, size) of a regular file no bigger than `max_bytes`, to read in parts."""
        fd, size = self._fs.open_regular(self._path(path), check_cap(max_bytes, "max_bytes"))
        return os.fdopen(fd, "rb"), size

    def read_text(
        self, path: str, encoding: str = "utf-8", max_bytes: int | None = MAX_READ
    ) -> str:
        return self.read_bytes(path, max_bytes).decode(encoding)

    def write_bytes(self, path: str, data: bytes, mode: int = 0o644) -> None:
        """Write a file, creating parent directories."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise InvalidArgument(f"data must be bytes, got {type(data).__name__}")
        self._fs.write_bytes(self._path(path), bytes(data), mode)

    def write_text(self, path: str, text: str, mode: int = 0o644) -> None:
        if not isinstance(text, str):
            raise InvalidArgument(f"text must be str, got {type(text).__name__}")
        self.write_bytes(path, text.encode(), mode)

    def list_dir(self, path: str = ".") -> list[FileInfo]:
        return self._fs.listdir(self._path(path))

    def remove(self, path: str) -> bool:
        """Remove a file, link or whole directory, by the host (no program of the sandbox runs);
        False if nothing was there."""
        return self._fs.remove(self._path(path))

    def exists(self, path: str) -> bool:
        return self._fs.exists(self._path(path))

    def upload(
        self, local: str | os.PathLike[str], remote: str, *, owner: str | int | None = None
    ) -> None:
        """Copy a local file, or a directory's contents, to `remote` inside the sandbox.

        Modes and times are kept; files belong to the sandbox's root, or to `owner` ("app",
        "app:staff", as `COPY --chown` does).
        """
        src = Path(local)
        if not src.exists():
            raise InvalidArgument(f"upload source {str(src)!r} does not exist")
        with tempfile.SpooledTemporaryFile(8 << 20) as buf:
            single = not src.is_dir()  # a file: its contents, even through a symlink
            with tarfile.open(
                fileobj=buf, mode="w", format=tarfile.PAX_FORMAT, dereference=single
            ) as tar:
                if src.is_dir():
                    tar.add(src, arcname=".")
                else:
                    tar.add(src, arcname=PurePosixPath(remote).name)
            buf.seek(0)
            target = remote if src.is_dir() else str(PurePosixPath(self._path(remote)).parent)
            self._put_tree(target, buf, owner)

    def download(
        self, remote: str, local: str | os.PathLike[str], *, max_bytes: int | None = MAX_TREE
    ) -> None:
        """Copy a file or directory tree from the sandbox to `local` on the host (at most
        `max_bytes` of file contents; TooLarge before anything is copied)."""
        dest = Path(local)
        if not self.is_dir(remote):
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(self.read_bytes(remote, max_bytes))
            return
        dest.mkdir(parents=True, exist_ok=True)
        with tempfile.SpooledTemporaryFile(8 << 20) as buf:
            self.write_tar(remote, buf, max_bytes)
            buf.seek(0)
            with tarfile.open(fileobj=buf) as tar:
                tar.extractall(dest, filter=_host_safe)

    def is_dir(self, path: str) -> bool:
        """True if `path` is a directory (following links inside the sandbox)."""
        info = self._fs.open(self._path(path), os.O_PATH)
        try:
            return os.path.isdir(f"/proc/self/fd/{info}")
        finally:
            os.close(info)

    def read_tree(self, path: str, max_bytes: int | None = MAX_TREE) -> bytes:
        """A directory's contents as an uncompressed tar archive (paths relative to it), made
        by the host, never by a `tar` of the sandbox; TooLarge past `max_bytes` of files."""
        out = io.BytesIO()
        self.write_tar(path, out, max_bytes)
        return out.getvalue()

    def write_tar(self, path: str, out: BinaryIO, max_bytes: int | None = MAX_TREE) -> None:
        """Stream `path`'s contents as a tar archive into `out` (see `read_tree`)."""
        write_tar(self._fs, self._path(path), out, check_cap(max_bytes, "max_bytes"))

    def write_tree(
        self, path: str, archive: bytes | BinaryIO, *, owner: str | int | None = None
    ) -> None:
        """Unpack a tar archive into `path` (created if missing), inside the sandbox; its
        entries belong to the sandbox's root, or to `owner`."""
        fileobj = io.BytesIO(archive) if isinstance(archive, bytes | bytearray) else archive
        self._put_tree(path, fileobj, owner)

    def _put_tree(self, path: str, archive: BinaryIO, owner: str | int | None) -> None:
        ids = None
        if owner is not None:
            user = accounts.resolve(self._fs, owner).user
            ids = (user.uid, user.gid)
        extract_tar(self._fs, self._path(path), archive, ids)

    def upper_layer(self) -> str:
        """A host path of the sandbox's writable layer as stored (ids as inside), to copy it
        while it is quiet (an image build does, after `kill_all`)."""
        self._check_open()
        return self._runtime.upper(self._rec)

    # -- snapshots -----------------------------------------------------------------------------
    def snapshot(self) -> Snapshot:
        """Capture the filesystem now (processes keep running; their memory is not captured).

        The snapshot is kept while this process lives (for a detached sandbox: while the
        sandbox exists) and while a sandbox or snapshot stacks on it; `remove()` it sooner.
        """
        self._check_open()
        return Snapshot(self._runtime.snapshot(self._rec), self.spec)

    def fork(self, **overrides: Any) -> Sandbox:
        """Snapshot this sandbox and start a new one from it; the snapshot in between goes
        when the new sandbox closes."""
        snap = self.snapshot()
        try:
            child = snap.fork(**overrides)
        except BaseException:
            snap.remove()
            raise
        self._runtime.give_snapshot(snap.id, f"sandbox:{child.id}")
        return child


class AsyncSandbox:
    """`Sandbox` for asyncio code: `async with await AsyncSandbox.create() as sb: ...`.

    Each call runs the blocking operation on a thread of a pool sized for hundreds of concurrent
    commands (asyncio's default pool has only a handful of threads), so many sandboxes and
    commands proceed concurrently on one event loop.
    """

    def __init__(self, sandbox: Sandbox) -> None:
        self.sync = sandbox

    @classmethod
    async def create(cls, image: str | Snapshot = "base", **kwargs: Any) -> AsyncSandbox:
        return cls(await _in_thread(Sandbox.create, image, **kwargs))

    @property
    def id(self) -> str:
        return self.sync.id

    async def exec(self, cmd: str | list[str], **kwargs: Any) -> ExecResult:
        return await _in_thread(self.sync.exec, cmd, **kwargs)

    async def read_bytes(self, path: str) -> bytes:
        return await _in_thread(self.sync.read_bytes, path)

    async def read_text(self, path: str) -> str:
        return await _in_thread(self.sync.read_text, path)

    async def write_bytes(self, path: str, data: bytes, mode: int = 0o644) -> None:
        await _in_thread(self.sync.write_bytes, path, data, mode)

    async def write_text(self, path: str, text: str, mode: int = 0o644) -> None:
        await _in_thread(self.sync.write_text, path, text, mode)

    async def list_dir(self, path: str = ".") -> list[FileInfo]:
        return await _in_thread(self.sync.list_dir, path)

    async def upload(self, local: str | os.PathLike[str], remote: str) -> None:
        await _in_thread(self.sync.upload, local, remote)

    async def download(self, remote: str, local: str | os.PathLike[str]) -> None:
        await _in_thread(self.sync.download, remote, local)

    async def snapshot(self) -> Snapshot:
        return await _in_thread(self.sync.snapshot)

    async def fork(self, **overrides: Any) -> AsyncSandbox:
        return AsyncSandbox(await _in_thread(self.sync.fork, **overrides))

    async def close(self) -> None:
        await _in_thread(self.sync.close)

    async def __aenter__(self) -> AsyncSandbox:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def _host_safe(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo | None:
    """tarfile's "data" filter, skipping (not failing on) what it refuses: a link inside the
    sandbox that points to an absolute path or outside the tree means nothing on the host."""
    try:
        return tarfile.data_filter(member, dest)
    except tarfile.FilterError:
        return None


_POOL: ThreadPoolExecutor | None = None


async def _in_thread(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run a blocking call on the shared pool; threads are started only as needed."""
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=512, thread_name_prefix="rockroll-async")
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_POOL, functools.partial(func, *args, **kwargs))
