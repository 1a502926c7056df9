"""The one sandbox interface: `Sandbox`, with its `Session` and `Snapshot`.

Every sandbox (local, on a `rockroll serve`, on a node of a Ray fleet, a test double) implements
`Sandbox`; what can be said with its other methods alone (text files, trees, uploads, streams,
argument checks) is said here once. `Sandbox.create` and `Sandbox.connect` pick the
implementation by the server settings: the local one, or the remote one when a server is named.
Implementations register for that with `class LocalSandbox(Sandbox, place="local")`, so this
module imports none of them.
"""

from __future__ import annotations

import io
import os
import tarfile
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Generator
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from rockroll.errors import AccessDenied, InvalidArgument, SandboxClosed, SetupError
from rockroll.sandbox.checks import check_timeout
from rockroll.sandbox.files import MAX_READ, sandbox_path
from rockroll.sandbox.spec import SandboxSpec
from rockroll.sandbox.streams import OutputStream
from rockroll.sandbox.trees import MAX_TREE
from rockroll.sandbox.types import ExecResult, FileInfo

DEFAULT_TIMEOUT = 600.0
OutputCallback = Callable[[str, bytes], None]
Command = str | list[str]
_PLACES: dict[str, type[Sandbox]] = {}  # "local", "remote": where `create` may put a sandbox


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


def check_command(cmd: object) -> Command:
    """`cmd` if it is a string (for bash) or a non-empty list of strings (an argv)."""
    if isinstance(cmd, str):
        return cmd
    if isinstance(cmd, list | tuple) and cmd and all(isinstance(a, str) for a in cmd):
        return list(cmd)
    raise InvalidArgument(
        f"cmd must be a string (run by bash -c) or a non-empty list of strings (an argv), "
        f"got {type(cmd).__name__}: {cmd!r}"
    )


def check_stdin(stdin: object) -> bytes | None:
    """The bytes to feed a command (a str is encoded as UTF-8)."""
    data = stdin.encode() if isinstance(stdin, str) else stdin
    if data is not None and not isinstance(data, bytes):
        raise InvalidArgument(f"stdin must be bytes or str, got {type(stdin).__name__}")
    return data


def check_data(data: object) -> bytes:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise InvalidArgument(f"data must be bytes, got {type(data).__name__}")
    return bytes(data)


def command_text(cmd: Command) -> str:
    """How a command reads in the audit log."""
    return cmd if isinstance(cmd, str) else " ".join(cmd)


class Session(ABC):
    """A persistent shell in a sandbox: `cd`, exports and background jobs survive between
    commands. `run()` a command, `close()` to end the shell and its jobs."""

    @abstractmethod
    def run(self, cmd: str, *, timeout: float | None = DEFAULT_TIMEOUT) -> ExecResult:
        """Run `cmd` in the shell; the result has this command's exit code and output only.
        SandboxClosed once the shell has exited (`exit`) or the session was closed."""

    @abstractmethod
    def close(self) -> None:
        """End the shell and every process it started. Safe to call twice."""

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Snapshot(ABC):
    """A sandbox's filesystem frozen in time; `fork()` starts new sandboxes from it."""

    @property
    @abstractmethod
    def id(self) -> str: ...

    @property
    @abstractmethod
    def source(self) -> str:
        """The id of the sandbox it was taken of."""

    @abstractmethod
    def fork(self, **overrides: Any) -> Sandbox:
        """A new sandbox whose files are this snapshot's; settings default to the source's."""

    @abstractmethod
    def remove(self) -> None:
        """Delete the snapshot (InUse while a sandbox or snapshot stacks on it)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.id!r}, source={self.source!r})"


class Sandbox(ABC):
    """An isolated Linux environment: run commands, move files, snapshot and fork.

    with Sandbox.create(memory="1g") as sb:
        print(sb.exec("python3 --version").stdout)
    """

    def __init_subclass__(cls, place: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if place is not None:
            _PLACES[place] = cls

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
        user: str | None = None,
        ttl: float | None = None,
        backend: str = "bwrap",
        max_output: int = 1 << 20,
        detached: bool = False,
        profile: str = "agent",
        labels: dict[str, str] | None = None,
        disk: int | str | None = "10g",
        inodes: int | None = None,
        monitor: bool = True,
        rules: list[dict[str, Any]] | None = None,
        server: str | None = None,
        token: str | None = None,
    ) -> Sandbox:
        """Start a sandbox; use it as a context manager so `close()` always runs.

        `disk` bounds what it may write (its own filesystem of that size: writes past it fail
        with ENOSPC inside; None: no limit), `inodes` how many files; `user` is who commands
        run as when they name none (Docker's USER; None: root). `monitor` records every program
        the sandbox starts and every connection it tries in its audit log, and applies `rules`
        to them (`rockroll.sandbox.watch`; `rockroll.safety.default_rules()`). With `server` (or
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
            "user": user,
            "ttl": ttl,
            "max_output": max_output,
            "labels": labels or {},
            "disk": disk,
            "inodes": inodes,
            "rules": rules or [],
        }
        remote = server_settings(server, token)
        if remote is None:
            local = settings | {"backend": backend, "detached": detached, "profile": profile}
            local["monitor"] = monitor
            return _place("local").open_new(local, None)
        if backend != "bwrap" or profile != "agent" or detached or not monitor:
            raise InvalidArgument(
                "backend, profile, detached and monitor are the server's choice; leave them unset "
                "when creating a sandbox through a server"
            )
        return _place("remote").open_new(settings, remote)

    @classmethod
    def connect(
        cls, sandbox_id: str, *, server: str | None = None, token: str | None = None
    ) -> Sandbox:
        """Attach to a running sandbox by id (e.g. one made by `rockroll sandbox create`)."""
        remote = server_settings(server, token)
        return _place("local" if remote is None else "remote").open_existing(sandbox_id, remote)

    @classmethod
    def open_new(cls, settings: dict[str, Any], server: tuple[str, str] | None) -> Sandbox:
        """What `create` calls on the implementation registered for the place it chose."""
        raise InvalidArgument(f"{cls.__name__} is not made by Sandbox.create; see its own docs")

    @classmethod
    def open_existing(cls, sandbox_id: str, server: tuple[str, str] | None) -> Sandbox:
        """What `connect` calls on the implementation registered for the place it chose."""
        raise InvalidArgument(f"{cls.__name__} is not reached by Sandbox.connect")

    @property
    @abstractmethod
    def id(self) -> str: ...

    @property
    @abstractmethod
    def spec(self) -> SandboxSpec:
        """The settings it runs with (workdir, env, limits)."""

    @property
    @abstractmethod
    def closed(self) -> bool: ...

    @abstractmethod
    def close(self) -> None:
        """Kill every process and free what the sandbox held. Safe to call twice."""

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def check_open(self) -> None:
        """SandboxClosed once `close()` has run."""
        if self.closed:
            raise SandboxClosed(f"sandbox {self.id} is closed; create a new one")

    def path(self, path: object) -> str:
        """The absolute path inside the sandbox that `path` names (relative to the workdir);
        SandboxClosed once closed, InvalidArgument for a path that climbs above `/`."""
        self.check_open()
        return sandbox_path(path, self.spec.workdir)

    # -- commands ------------------------------------------------------------------------------
    @abstractmethod
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
        """Run `cmd` (a string for bash, or an argv list) and wait for it.

        A timeout kills the command and everything it started. `on_output(stream, chunk)`
        receives output as it arrives; the result keeps the head and tail of each stream.
        `user` ("app", "1000", "app:staff") runs it as that user of the sandbox (HOME from its
        passwd entry) instead of root.
        """

    def stream(
        self, cmd: Command, *, timeout: float | None = DEFAULT_TIMEOUT, **kwargs: Any
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
        self, cmd: Command, *, timeout: float | None = DEFAULT_TIMEOUT, **kwargs: Any
    ) -> OutputStream:
        """Start `cmd` and return its output as an `OutputStream` (`next_chunk`, `close`)."""
        check_timeout(timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        return OutputStream(
            lambda on_output: self.exec(cmd, timeout=timeout, on_output=on_output, **kwargs),
            deadline,
        )

    @abstractmethod
    def session(
        self,
        *,
        cwd: str | None = None,
        env: dict[str, str] | None = None,
        user: str | int | None = None,
    ) -> Session:
        """A persistent bash (see `Session`); `user` runs it as that user (see `exec`)."""

    @abstractmethod
    def kill_all(self) -> int:
        """SIGKILL every process of the sandbox (background jobs, daemons, sessions' shells):
        what runs next, a verifier say, runs alone. How many could not be killed (0 but for
        processes stuck in the kernel)."""

    @abstractmethod
    def audit_log(self) -> list[dict]:
        """Every command run in this sandbox: time, command, exit code, duration."""

    @abstractmethod
    def set_network(self, network: str | dict[str, Any]) -> None:
        """Change the egress policy while the sandbox runs: "none", "registries", "full", or
        `{"allow": [...], "deny": [...]}` (rockroll.sandbox.egress); it holds for every
        connection tried after this returns. A sandbox created with network="full" keeps it."""

    @abstractmethod
    def events(self) -> list[dict]:
        """What the monitor saw, in order: every program started (`kind` "exec") and every
        connection tried ("connect"), with the rules that matched and the verdict."""

    # -- files ---------------------------------------------------------------------------------
    @abstractmethod
    def read_bytes(self, path: str, max_bytes: int | None = MAX_READ) -> bytes:
        """A regular file's bytes; TooLarge (checked before reading) past `max_bytes`."""

    def read_text(
        self, path: str, encoding: str = "utf-8", max_bytes: int | None = MAX_READ
    ) -> str:
        return self.read_bytes(path, max_bytes).decode(encoding)

    def open_read(self, path: str, max_bytes: int | None = MAX_READ) -> tuple[BinaryIO, int]:
        """(file object, size) of a regular file no bigger than `max_bytes`, to read in parts."""
        data = self.read_bytes(path, max_bytes)
        return io.BytesIO(data), len(data)

    @abstractmethod
    def write_bytes(self, path: str, data: bytes, mode: int = 0o644) -> None:
        """Write a file, creating parent directories."""

    def write_text(self, path: str, text: str, mode: int = 0o644) -> None:
        if not isinstance(text, str):
            raise InvalidArgument(f"text must be str, got {type(text).__name__}")
        self.write_bytes(path, text.encode(), mode)

    @abstractmethod
    def list_dir(self, path: str = ".") -> list[FileInfo]: ...

    @abstractmethod
    def remove(self, path: str) -> bool:
        """Remove a file, link or whole directory, by the host (no program of the sandbox runs);
        False if nothing was there."""

    @abstractmethod
    def exists(self, path: str) -> bool: ...

    @abstractmethod
    def is_dir(self, path: str) -> bool:
        """True if `path` is a directory (following links inside the sandbox);
        FileNotFoundError if nothing is there."""

    @abstractmethod
    def write_tar(self, path: str, out: BinaryIO, max_bytes: int | None = MAX_TREE) -> None:
        """Stream `path`'s contents as an uncompressed tar archive (paths relative to it) into
        `out`, made by the host, never by a `tar` of the sandbox; TooLarge past `max_bytes`."""

    @abstractmethod
    def write_tree(
        self, path: str, archive: bytes | BinaryIO, *, owner: str | int | None = None
    ) -> None:
        """Unpack a tar archive into `path` (created if missing), inside the sandbox; its
        entries belong to the sandbox's root, or to `owner` ("app", "app:staff")."""

    def read_tree(self, path: str, max_bytes: int | None = MAX_TREE) -> bytes:
        """A directory's contents as a tar archive (see `write_tar`)."""
        out = io.BytesIO()
        self.write_tar(path, out, max_bytes)
        return out.getvalue()

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
            target = remote if src.is_dir() else str(PurePosixPath(self.path(remote)).parent)
            self.write_tree(target, buf, owner=owner)

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
                tar.extractall(dest, filter=host_safe)

    # -- snapshots -----------------------------------------------------------------------------
    @abstractmethod
    def snapshot(self) -> Snapshot:
        """Capture the filesystem now (processes keep running; their memory is not captured)."""

    @abstractmethod
    def fork(self, **overrides: Any) -> Sandbox:
        """Snapshot this sandbox and start a new one from it; the snapshot in between goes
        when the new sandbox closes."""

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"{type(self).__name__}({self.id!r}, {state})"


def host_safe(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo | None:
    """tarfile's "data" filter, skipping (not failing on) what it refuses: a link inside the
    sandbox that points to an absolute path or outside the tree means nothing on the host."""
    try:
        return tarfile.data_filter(member, dest)
    except tarfile.FilterError:
        return None


def _place(name: str) -> type[Sandbox]:
    found = _PLACES.get(name)
    if found is None:
        raise SetupError(
            f"no {name} sandbox implementation is loaded; import rockroll.sandbox.sdk (which "
            "loads the local and remote ones) before calling Sandbox.create"
        )
    return found
