"""The one way in: `Sandbox` (and `AsyncSandbox`), whatever backend runs it.

with Sandbox.create(memory="1g") as sb:
    print(sb.exec("python3 --version").stdout)
"""

from __future__ import annotations

import asyncio
import functools
import io
import os
import queue
import tarfile
import tempfile
import threading
from collections.abc import Callable, Generator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from rockroll.sandbox import protocol
from rockroll.sandbox.errors import AccessDenied, InvalidArgument, SandboxClosed
from rockroll.sandbox.files import sandbox_path
from rockroll.sandbox.runtime import LocalRuntime, local_runtime
from rockroll.sandbox.session import Session
from rockroll.sandbox.spec import SandboxSpec, make_spec
from rockroll.sandbox.state import SandboxRecord, SnapshotRecord, read_audit
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
        server: str | None = None,
        token: str | None = None,
    ) -> Sandbox:
        """Start a sandbox; use it as a context manager so `close()` always runs.

        With `server` (or `ROCKROLL_SERVER`) the sandbox runs on that `rockroll serve`, reached
        with `token` (or `ROCKROLL_TOKEN`); the object behaves the same.
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
    ) -> ExecResult:
        """Run `cmd` (a string for bash, or an argv list) and wait for it.

        A timeout kills the command's whole process group. `on_output(stream, chunk)` receives
        output as it arrives; the result keeps the head and tail of each stream.
        """
        self._check_open()
        argv = self._argv(cmd)
        _check_timeout(timeout)
        data = stdin.encode() if isinstance(stdin, str) else stdin
        if data is not None and not isinstance(data, bytes):
            raise InvalidArgument(f"stdin must be bytes or str, got {type(stdin).__name__}")
        return self._runtime.exec(
            self._rec,
            argv,
            command=cmd if isinstance(cmd, str) else " ".join(cmd),
            cwd=sandbox_path(cwd, self.spec.workdir) if cwd else self.spec.workdir,
            env=self.spec.base_env() | _check_env(env),
            stdin=data,
            timeout=timeout,
            on_output=on_output,
        )

    def stream(
        self, cmd: str | list[str], *, timeout: float | None = DEFAULT_TIMEOUT, **kwargs: Any
    ) -> Generator[tuple[str, str], None, ExecResult]:
        """Yield (stream, text) chunks as they arrive; the generator returns the ExecResult."""
        chunks: queue.Queue = queue.Queue()
        box: dict[str, Any] = {}

        def work() -> None:
            try:
                box["result"] = self.exec(
                    cmd, timeout=timeout, on_output=lambda s, b: chunks.put((s, b)), **kwargs
                )
            except BaseException as exc:
                box["error"] = exc
            chunks.put(None)

        threading.Thread(target=work, daemon=True).start()
        while (item := chunks.get()) is not None:
            yield item[0], item[1].decode(errors="replace")
        if "error" in box:
            raise box["error"]
        return box["result"]

    def session(self, *, cwd: str | None = None, env: dict[str, str] | None = None) -> Session:
        """A persistent bash: `cd`, exports and background jobs survive between commands."""
        self._check_open()
        return Session(
            self._runtime,
            self._rec,
            cwd=sandbox_path(cwd, self.spec.workdir) if cwd else self.spec.workdir,
            env=self.spec.base_env() | _check_env(env),
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

    def read_bytes(self, path: str) -> bytes:
        return self._fs.read_bytes(self._path(path))

    def read_text(self, path: str, encoding: str = "utf-8") -> str:
        return self.read_bytes(path).decode(encoding)

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

    def exists(self, path: str) -> bool:
        return self._fs.exists(self._path(path))

    def upload(self, local: str | os.PathLike[str], remote: str) -> None:
        """Copy a local file, or a directory's contents, to `remote` inside the sandbox.

        Modes are kept, plus the owner's write bit: root in a sandbox has no capabilities, so
        it could not otherwise fill or change a read-only directory it was given.
        """
        src = Path(local)
        if src.is_dir():
            buf = io.BytesIO()
            with tarfile.open(fileobj=buf, mode="w") as tar:
                tar.add(src, arcname=".", filter=_owned_writable)
            self.write_tree(remote, buf.getvalue())
        elif src.is_file():
            self.write_bytes(remote, src.read_bytes(), (src.stat().st_mode & 0o7777) | 0o200)
        else:
            raise InvalidArgument(f"upload source {str(src)!r} does not exist")

    def download(self, remote: str, local: str | os.PathLike[str]) -> None:
        """Copy a file or directory tree from the sandbox to `local` on the host."""
        dest = Path(local)
        if not self.is_dir(remote):
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(self.read_bytes(remote))
            return
        dest.mkdir(parents=True, exist_ok=True)
        with tarfile.open(fileobj=io.BytesIO(self.read_tree(remote))) as tar:
            tar.extractall(dest, filter="data")

    def is_dir(self, path: str) -> bool:
        """True if `path` is a directory (following links inside the sandbox)."""
        info = self._fs.open(self._path(path), os.O_PATH)
        try:
            return os.path.isdir(f"/proc/self/fd/{info}")
        finally:
            os.close(info)

    def read_tree(self, path: str) -> bytes:
        """A directory's contents as an uncompressed tar archive (paths relative to it)."""
        src = self._path(path)
        return self._tar(["tar", "-c", "-f", "-", "-C", src, "."], None)

    def write_tree(self, path: str, archive: bytes) -> None:
        """Unpack a tar archive into `path` (created if missing), inside the sandbox."""
        dest = self._path(path)
        self._fs.makedirs(dest)
        self._tar(["tar", "-x", "-f", "-", "-C", dest], archive)

    def _tar(self, argv: list[str], stdin: bytes | None) -> bytes:
        with tempfile.TemporaryFile() as out:
            res = protocol.run_to_file(self._rec.sock, argv, out.fileno(), stdin=stdin)
            if res.exit_code != 0:
                raise InvalidArgument(f"{' '.join(argv)} failed in the sandbox: {res.stderr}")
            out.seek(0)
            return out.read()

    # -- snapshots -----------------------------------------------------------------------------
    def snapshot(self) -> Snapshot:
        """Capture the filesystem now (processes keep running; their memory is not captured)."""
        self._check_open()
        return Snapshot(self._runtime.snapshot(self._rec), self.spec)

    def fork(self, **overrides: Any) -> Sandbox:
        """Snapshot this sandbox and start a new one from it."""
        return self.snapshot().fork(**overrides)


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


def _owned_writable(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.mode |= 0o200
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


_POOL: ThreadPoolExecutor | None = None


async def _in_thread(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run a blocking call on the shared pool; threads are started only as needed."""
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=512, thread_name_prefix="rockroll-async")
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_POOL, functools.partial(func, *args, **kwargs))


def _check_timeout(timeout: object) -> None:
    if timeout is None:
        return
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
        raise InvalidArgument(
            f"timeout must be a positive number of seconds or None, got {timeout!r}"
        )


def _check_env(env: object) -> dict[str, str]:
    if env is None:
        return {}
    if not isinstance(env, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in env.items()
    ):
        raise InvalidArgument(f"env must be a dict of str to str, got {env!r}")
    return env
