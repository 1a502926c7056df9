"""`Sandbox` over HTTP: the same object and behaviour, with the sandbox on a `rockroll serve`.

    Sandbox.create(memory="1g", server="http://host:8321", token="rr_...")

or set `ROCKROLL_SERVER` and `ROCKROLL_TOKEN`. Errors come back as the local runtime's
exceptions (`SandboxNotFound`, `SandboxClosed`, `InvalidArgument`, ...), plus `AccessDenied`
for a refused token and `QuotaExceeded` for a reached quota, each with the server's message.
The client lives beside the SDK (not in `rockroll.service`) because `Sandbox.create` returns it:
the SDK must not import the server's layer. It registers as the "remote" place of `Sandbox`.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Generator, Iterator
from typing import Any, BinaryIO

import httpx

from rockroll.errors import (
    InvalidArgument,
    SandboxClosed,
    SandboxError,
    SandboxNotFound,
    from_wire,
)
from rockroll.sandbox.base import (
    DEFAULT_TIMEOUT,
    Command,
    OutputCallback,
    Sandbox,
    Session,
    Snapshot,
    check_command,
    check_data,
)
from rockroll.sandbox.checks import check_env, check_timeout
from rockroll.sandbox.files import MAX_READ
from rockroll.sandbox.spec import SandboxSpec
from rockroll.sandbox.trees import MAX_TREE
from rockroll.sandbox.types import ExecResult, FileInfo

CONNECT_TIMEOUT = 10.0
CALL_TIMEOUT = 120.0  # seconds for calls that are not commands (create, files, snapshots)
_clients: dict[tuple[str, str], httpx.Client] = {}
_clients_lock = threading.Lock()


def client_for(url: str, token: str) -> httpx.Client:
    """One pooled HTTP client per (server, token), shared by every sandbox of this process."""
    with _clients_lock:
        client = _clients.get((url, token))
        if client is None:
            client = httpx.Client(
                base_url=url,
                headers={"Authorization": f"Bearer {token}"},
                timeout=httpx.Timeout(CALL_TIMEOUT, connect=CONNECT_TIMEOUT),
                limits=httpx.Limits(max_connections=1024, max_keepalive_connections=256),
            )
            _clients[(url, token)] = client
        return client


def check(response: httpx.Response) -> httpx.Response:
    """The response if it succeeded, else the SDK exception its error body names."""
    if response.is_success:
        return response
    try:
        detail = response.json()["error"]
        code, message = detail["code"], detail["message"]
    except (ValueError, KeyError, TypeError):
        code, message = "internal", response.text[:500] or response.reason_phrase
    kind = from_wire(code)
    raise kind(f"{message} (HTTP {response.status_code})")


def call(client: httpx.Client, method: str, url: str, **kwargs: Any) -> httpx.Response:
    try:
        return check(client.request(method, url, **kwargs))
    except httpx.TransportError as exc:
        raise SandboxError(
            f"cannot reach the sandbox server at {client.base_url}: {exc}; is `rockroll serve` "
            "running there?"
        ) from exc


@contextlib.contextmanager
def streamed(client: httpx.Client, request: httpx.Request) -> Iterator[httpx.Response]:
    """The reply to `request`, read as it arrives; the SDK exception its error body names."""
    try:
        response = client.send(request, stream=True)
    except httpx.TransportError as exc:
        raise SandboxError(f"cannot reach the sandbox server: {exc}") from exc
    try:
        if not response.is_success:
            response.read()
            check(response)
        yield response
    finally:
        response.close()


def delete_gone_ok(client: httpx.Client, url: str) -> None:
    """DELETE `url`; one already gone (404, 410) is what closing wanted, so no error."""
    with contextlib.suppress(SandboxNotFound, SandboxClosed):
        call(client, "DELETE", url)


class RemoteSnapshot(Snapshot):
    """A snapshot on the server; `fork()` starts sandboxes from it there."""

    def __init__(self, client: httpx.Client, snapshot_id: str, source: str) -> None:
        self._client = client
        self._id = snapshot_id
        self._source = source

    @property
    def id(self) -> str:
        return self._id

    @property
    def source(self) -> str:
        return self._source

    def fork(self, **overrides: Any) -> RemoteSandbox:
        body = _fork_body(overrides)
        info = call(self._client, "POST", f"/v1/snapshots/{self.id}/fork", json=body).json()
        return RemoteSandbox(self._client, info)

    def remove(self) -> None:
        call(self._client, "DELETE", f"/v1/snapshots/{self.id}")


class RemoteSession(Session):
    """A persistent bash on the server's sandbox (see `Session`)."""

    def __init__(self, client: httpx.Client, session_id: str) -> None:
        self._client = client
        self.id = session_id
        self._closed = False

    def run(self, cmd: str, *, timeout: float | None = DEFAULT_TIMEOUT) -> ExecResult:
        if not isinstance(cmd, str):
            raise InvalidArgument(f"cmd must be a string, got {type(cmd).__name__}")
        if self._closed:
            raise SandboxClosed(f"session {self.id} is closed")
        reply = call(
            self._client,
            "POST",
            f"/v1/sessions/{self.id}/run",
            json={"cmd": cmd, "timeout": timeout},
            timeout=_command_timeout(timeout),
        )
        return ExecResult.model_validate(reply.json())

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            delete_gone_ok(self._client, f"/v1/sessions/{self.id}")


class RemoteSandbox(Sandbox, place="remote"):
    """A `Sandbox` whose every call is an HTTP request to the sandbox server."""

    def __init__(self, client: httpx.Client, info: dict) -> None:
        self._client = client
        self._info = info
        self._spec = SandboxSpec.model_validate(info["spec"])
        self._closed = False

    @classmethod
    def open_new(cls, settings: dict[str, Any], server: tuple[str, str] | None) -> RemoteSandbox:
        if server is None:
            raise InvalidArgument("a remote sandbox needs a server: pass server=... and token=...")
        return cls.create_remote(*server, **settings)

    @classmethod
    def open_existing(cls, sandbox_id: str, server: tuple[str, str] | None) -> RemoteSandbox:
        if server is None:
            raise InvalidArgument("a remote sandbox needs a server: pass server=... and token=...")
        return cls.connect_remote(*server, sandbox_id)

    @classmethod
    def create_remote(
        cls, url: str, token: str, *, ttl: float | None = None, **settings: Any
    ) -> RemoteSandbox:
        client = client_for(url, token)
        body = {k: v for k, v in settings.items() if v is not None or k == "memory"}
        body["idle_ttl"] = ttl
        info = call(client, "POST", "/v1/sandboxes", json=body).json()
        return cls(client, info)

    @classmethod
    def connect_remote(cls, url: str, token: str, sandbox_id: str) -> RemoteSandbox:
        client = client_for(url, token)
        return cls(client, call(client, "GET", f"/v1/sandboxes/{sandbox_id}").json())

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def id(self) -> str:
        return str(self._info["id"])

    @property
    def spec(self) -> SandboxSpec:
        return self._spec

    @property
    def info(self) -> dict:
        """What the server last said about this sandbox (owner, labels, deadlines, ...)."""
        return self._info

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            delete_gone_ok(self._client, f"/v1/sandboxes/{self.id}")

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"RemoteSandbox({self.id!r}, server={str(self._client.base_url)!r}, {state})"

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
        """As `Sandbox.exec`; with `on_output`, the output streams over the connection."""
        body = self._exec_body(cmd, timeout, cwd, env, stdin) | {"user": _user(user)}
        if on_output is None:
            reply = call(
                self._client,
                "POST",
                f"/v1/sandboxes/{self.id}/exec",
                json=body,
                timeout=_command_timeout(timeout),
            )
            return ExecResult.model_validate(reply.json())
        events = self._events(body | {"stream": True}, timeout)
        for stream, text in events:
            on_output(stream, text.encode())
        return events.result

    def stream(
        self, cmd: Command, *, timeout: float | None = DEFAULT_TIMEOUT, **kwargs: Any
    ) -> Generator[tuple[str, str], None, ExecResult]:
        body = self._exec_body(
            cmd, timeout, kwargs.get("cwd"), kwargs.get("env"), kwargs.get("stdin")
        )
        body["user"] = _user(kwargs.get("user"))
        events = self._events(body | {"stream": True}, timeout)
        yield from events
        return events.result

    def _exec_body(
        self,
        cmd: object,
        timeout: float | None,
        cwd: str | None,
        env: dict[str, str] | None,
        stdin: bytes | str | None,
    ) -> dict:
        self.check_open()
        cmd = check_command(cmd)
        check_timeout(timeout)
        if isinstance(stdin, bytes):
            stdin = stdin.decode()
        return {
            "cmd": cmd,
            "timeout": timeout,
            "cwd": cwd,
            "env": check_env(env) if env else None,
            "stdin": stdin,
        }

    def _events(self, body: dict, timeout: float | None) -> _Events:
        return _Events(self._client, f"/v1/sandboxes/{self.id}/exec", body, timeout)

    def session(
        self,
        *,
        cwd: str | None = None,
        env: dict[str, str] | None = None,
        user: str | int | None = None,
    ) -> RemoteSession:
        self.check_open()
        body = {"cwd": cwd, "env": env, "user": _user(user)}
        reply = call(self._client, "POST", f"/v1/sandboxes/{self.id}/sessions", json=body)
        return RemoteSession(self._client, reply.json()["id"])

    def kill_all(self) -> int:
        self.check_open()
        return int(call(self._client, "POST", f"/v1/sandboxes/{self.id}/kill").json()["left"])

    def audit_log(self) -> list[dict]:
        return call(self._client, "GET", f"/v1/sandboxes/{self.id}/audit").json()

    def events(self) -> list[dict]:
        return call(self._client, "GET", f"/v1/sandboxes/{self.id}/events").json()

    def set_network(self, network: str | dict[str, Any]) -> None:
        body = {"network": network}
        call(self._client, "PUT", f"/v1/sandboxes/{self.id}/network", json=body)

    # -- files ---------------------------------------------------------------------------------
    def _file_url(self, kind: str) -> str:
        self.check_open()
        return f"/v1/sandboxes/{self.id}/{kind}"

    def read_bytes(self, path: str, max_bytes: int | None = MAX_READ) -> bytes:
        params: dict[str, Any] = {"path": self.path(path)}
        if max_bytes is not None:
            params["max_bytes"] = max_bytes
        return call(self._client, "GET", self._file_url("files"), params=params).content

    def write_bytes(self, path: str, data: bytes, mode: int = 0o644) -> None:
        data = check_data(data)
        params = {"path": self.path(path), "mode": f"{mode:04o}"}
        call(self._client, "PUT", self._file_url("files"), params=params, content=data)

    def list_dir(self, path: str = ".") -> list[FileInfo]:
        reply = call(self._client, "GET", self._file_url("dir"), params={"path": self.path(path)})
        return [FileInfo.model_validate(item) for item in reply.json()]

    def remove(self, path: str) -> bool:
        params = {"path": self.path(path)}
        return bool(
            call(self._client, "DELETE", self._file_url("files"), params=params).json()["removed"]
        )

    def exists(self, path: str) -> bool:
        reply = call(self._client, "GET", self._file_url("stat"), params={"path": self.path(path)})
        return bool(reply.json()["exists"])

    def is_dir(self, path: str) -> bool:
        reply = call(self._client, "GET", self._file_url("stat"), params={"path": self.path(path)})
        found = reply.json()
        if not found["exists"]:
            raise FileNotFoundError(f"no such file or directory in the sandbox: {path!r}")
        return bool(found["is_dir"])

    def write_tar(self, path: str, out: BinaryIO, max_bytes: int | None = MAX_TREE) -> None:
        params: dict[str, Any] = {"path": self.path(path)}
        if max_bytes is not None:
            params["max_bytes"] = max_bytes
        request = self._client.build_request("GET", self._file_url("tree"), params=params)
        with streamed(self._client, request) as response:
            for chunk in response.iter_bytes():
                out.write(chunk)

    def write_tree(
        self, path: str, archive: bytes | BinaryIO, *, owner: str | int | None = None
    ) -> None:
        params = {"path": self.path(path)}
        if owner is not None:
            params["owner"] = str(owner)
        content = bytes(archive) if isinstance(archive, bytes | bytearray) else archive.read()
        call(self._client, "PUT", self._file_url("tree"), params=params, content=content)

    # -- snapshots -----------------------------------------------------------------------------
    def snapshot(self) -> RemoteSnapshot:
        self.check_open()
        reply = call(self._client, "POST", f"/v1/sandboxes/{self.id}/snapshots").json()
        return RemoteSnapshot(self._client, reply["id"], reply["source"])

    def fork(self, **overrides: Any) -> RemoteSandbox:
        return self.snapshot().fork(**overrides)


class _Events:
    """The NDJSON lines of a streamed command as (stream, text); `.result` once exhausted."""

    def __init__(self, client: httpx.Client, url: str, body: dict, timeout: float | None) -> None:
        self._client, self._url, self._body, self._timeout = client, url, body, timeout
        self.result: ExecResult | None = None

    def __iter__(self) -> Iterator[tuple[str, str]]:
        request = self._client.build_request(
            "POST", self._url, json=self._body, timeout=_command_timeout(self._timeout)
        )
        with streamed(self._client, request) as response:
            for line in response.iter_lines():
                if not line:
                    continue
                event = json.loads(line)
                if "result" in event:
                    self.result = ExecResult.model_validate(event["result"])
                elif "error" in event:
                    kind = from_wire(event["error"]["code"])
                    raise kind(event["error"]["message"])
                else:
                    yield event["stream"], event["data"]
        if self.result is None:
            raise SandboxError("the server closed the stream before the command's result")


def _user(user: str | int | None) -> str | None:
    return None if user is None else str(user)


def _command_timeout(timeout: float | None) -> httpx.Timeout:
    """No read limit beyond the command's own (plus a margin for the kill and the reply)."""
    read = None if timeout is None else timeout + 60
    return httpx.Timeout(CALL_TIMEOUT, read=read, connect=CONNECT_TIMEOUT)


def _fork_body(overrides: dict[str, Any]) -> dict:
    allowed = {"memory", "cpus", "env", "labels", "ttl", "lifetime"}
    unknown = set(overrides) - allowed
    if unknown:
        raise InvalidArgument(
            f"fork through the server takes {sorted(allowed)}; got {sorted(unknown)}"
        )
    body = dict(overrides)
    if "ttl" in body:
        body["idle_ttl"] = body.pop("ttl")
    return body
