"""`LocalSandbox`: a `Sandbox` run by this machine's runtime (bwrap or podman)."""

from __future__ import annotations

import io
import os
from typing import Any, BinaryIO

from rockroll.errors import InvalidArgument
from rockroll.sandbox import accounts, protocol
from rockroll.sandbox.base import (
    DEFAULT_TIMEOUT,
    Command,
    OutputCallback,
    Sandbox,
    Snapshot,
    check_command,
    check_data,
    check_stdin,
    command_text,
)
from rockroll.sandbox.checks import check_cap, check_env, check_timeout
from rockroll.sandbox.files import MAX_READ, sandbox_path
from rockroll.sandbox.networks import namespace_of
from rockroll.sandbox.records import SandboxRecord, SnapshotRecord, read_audit, read_events
from rockroll.sandbox.runtime import LocalRuntime, local_runtime
from rockroll.sandbox.session import LocalSession
from rockroll.sandbox.spec import SandboxSpec, make_spec
from rockroll.sandbox.trees import MAX_TREE, extract_tar, write_tar
from rockroll.sandbox.types import ExecResult, FileInfo


class LocalSnapshot(Snapshot):
    """A snapshot on this machine's disk."""

    def __init__(self, record: SnapshotRecord, spec: SandboxSpec) -> None:
        self.record = record
        self._spec = spec

    @property
    def id(self) -> str:
        return self.record.id

    @property
    def source(self) -> str:
        return self.record.source

    def fork(self, **overrides: Any) -> Sandbox:
        settings = self._spec.model_dump() | overrides | {"image": self.id}
        return LocalSandbox.open(make_spec(**settings))

    def remove(self) -> None:
        local_runtime().remove_snapshot(self.id)


class LocalSandbox(Sandbox, place="local"):
    """A sandbox on this machine: commands go to its init's socket, files are opened by the
    host inside its root (never by a program of the sandbox)."""

    def __init__(self, record: SandboxRecord, runtime: LocalRuntime) -> None:
        self._rec = record
        self._runtime = runtime
        self._fs = runtime.rootfs(record)
        self._closed = False
        self._bash: bool | None = None

    @classmethod
    def open_new(cls, settings: dict[str, Any], server: tuple[str, str] | None) -> LocalSandbox:
        return cls.open(make_spec(**settings))

    @classmethod
    def open_existing(cls, sandbox_id: str, server: tuple[str, str] | None) -> LocalSandbox:
        runtime = local_runtime()
        return cls(runtime.get(sandbox_id), runtime)

    @classmethod
    def open(cls, spec: SandboxSpec) -> LocalSandbox:
        """A new sandbox on this machine, whatever the server settings say (image builds)."""
        runtime = local_runtime()
        return cls(runtime.create(spec), runtime)

    @property
    def id(self) -> str:
        return self._rec.id

    @property
    def spec(self) -> SandboxSpec:
        return self._rec.spec

    @property
    def record(self) -> SandboxRecord:
        """What the runtime keeps of the sandbox (its directory, cgroup, socket, layers)."""
        return self._rec

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Kill every process and remove the overlay, cgroups and socket. Safe to call twice."""
        if not self._closed:
            self._closed = True
            self._runtime.close(self.id)

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"LocalSandbox({self.id!r}, image={self._rec.image!r}, {state})"

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
        """As `Sandbox.exec`; a timeout kills the command and everything it started (`setsid`
        ones included)."""
        self.check_open()
        cmd = check_command(cmd)
        check_timeout(timeout)
        data = check_stdin(stdin)
        ids, env_all = self._identity(user)
        return self._runtime.exec(
            self._rec,
            self._argv(cmd),
            command=command_text(cmd),
            cwd=sandbox_path(cwd, self.spec.workdir) if cwd else self.spec.workdir,
            env=env_all | check_env(env),
            stdin=data,
            timeout=timeout,
            on_output=on_output,
            user=ids,
        )

    def _argv(self, cmd: Command) -> list[str]:
        if isinstance(cmd, list):
            return cmd
        if self._bash is None:
            self._bash = self._fs.exists("/bin/bash")
        return ["/bin/bash" if self._bash else "/bin/sh", "-c", cmd]

    def _identity(self, user: str | int | None) -> tuple[protocol.User | None, dict[str, str]]:
        """The ids a command of `user` runs as (None: the sandbox's default user, root unless
        the spec names one) and its base environment (HOME from the user's passwd entry)."""
        if user is None:
            user = self.spec.user
        if user is None:
            return None, self.spec.base_env()
        account = accounts.resolve(self._fs, user)
        return account.user, self.spec.base_env() | {"HOME": account.home}

    def kill_all(self) -> int:
        self.check_open()
        return self._runtime.kill_all(self._rec)

    def session(
        self,
        *,
        cwd: str | None = None,
        env: dict[str, str] | None = None,
        user: str | int | None = None,
    ) -> LocalSession:
        self.check_open()
        ids, env_all = self._identity(user)
        return LocalSession(
            self._runtime,
            self._rec,
            cwd=sandbox_path(cwd, self.spec.workdir) if cwd else self.spec.workdir,
            env=env_all | check_env(env),
            user=ids,
        )

    def audit_log(self) -> list[dict]:
        return read_audit(self.id)

    def events(self) -> list[dict]:
        return read_events(self.id)

    def set_network(self, network: str | dict[str, Any]) -> None:
        self.check_open()
        self._runtime.set_network(self._rec, network)

    # -- files ---------------------------------------------------------------------------------
    def read_bytes(self, path: str, max_bytes: int | None = MAX_READ) -> bytes:
        return self._fs.read_bytes(self.path(path), check_cap(max_bytes, "max_bytes"))

    def open_read(self, path: str, max_bytes: int | None = MAX_READ) -> tuple[BinaryIO, int]:
        fd, size = self._fs.open_regular(self.path(path), check_cap(max_bytes, "max_bytes"))
        return os.fdopen(fd, "rb"), size

    def write_bytes(self, path: str, data: bytes, mode: int = 0o644) -> None:
        self._fs.write_bytes(self.path(path), check_data(data), mode)

    def list_dir(self, path: str = ".") -> list[FileInfo]:
        return self._fs.listdir(self.path(path))

    def remove(self, path: str) -> bool:
        return self._fs.remove(self.path(path))

    def exists(self, path: str) -> bool:
        return self._fs.exists(self.path(path))

    def is_dir(self, path: str) -> bool:
        info = self._fs.open(self.path(path), os.O_PATH)
        try:
            return os.path.isdir(f"/proc/self/fd/{info}")
        finally:
            os.close(info)

    def write_tar(self, path: str, out: BinaryIO, max_bytes: int | None = MAX_TREE) -> None:
        write_tar(self._fs, self.path(path), out, check_cap(max_bytes, "max_bytes"))

    def write_tree(
        self, path: str, archive: bytes | BinaryIO, *, owner: str | int | None = None
    ) -> None:
        if isinstance(archive, bytes | bytearray):
            archive = io.BytesIO(archive)
        elif not hasattr(archive, "read"):
            raise InvalidArgument(f"archive must be bytes or a file, got {type(archive).__name__}")
        ids = None
        if owner is not None:
            user = accounts.resolve(self._fs, owner).user
            ids = (user.uid, user.gid)
        extract_tar(self._fs, self.path(path), archive, ids)

    def network_namespace(self) -> str:
        """The sandbox's own network namespace (`/proc/PID/ns/net`), for a `PrivateNetwork`
        to plug it into; only `network="none"` sandboxes on this host have one."""
        self.check_open()
        if not self.spec.own_network() or self._rec.backend_pid is None:
            raise InvalidArgument("a network='full' sandbox has no network of its own to join")
        return namespace_of(self._rec.backend_pid)

    def upper_layer(self) -> str:
        """A host path of the sandbox's writable layer as stored (ids as inside), to copy it
        while it is quiet (an image build does, after `kill_all`)."""
        self.check_open()
        return self._runtime.upper(self._rec)

    # -- snapshots -----------------------------------------------------------------------------
    def snapshot(self) -> LocalSnapshot:
        """As `Sandbox.snapshot`. The snapshot is kept while this process lives (for a detached
        sandbox: while the sandbox exists) and while a sandbox or snapshot stacks on it;
        `remove()` it sooner."""
        self.check_open()
        return LocalSnapshot(self._runtime.snapshot(self._rec), self.spec)

    def fork(self, **overrides: Any) -> Sandbox:
        snap = self.snapshot()
        try:
            child = snap.fork(**overrides)
        except BaseException:
            snap.remove()
            raise
        self._runtime.give_snapshot(snap.id, f"sandbox:{child.id}")
        return child
