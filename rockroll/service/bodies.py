"""What crosses the HTTP boundary: request and response bodies, and the error body.

Every request model forbids unknown fields, so a typo (`memroy`) is a 422 that names the field
instead of a silently ignored setting.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from rockroll.sandbox.types import ExecResult, FileInfo
from rockroll.strict import Strict

__all__ = ["ExecResult", "FileInfo"]


class ErrorDetail(BaseModel):
    code: str = Field(
        description="stable machine-readable kind: unauthorized, forbidden, not_found, "
        "invalid_argument, invalid_json, validation_error, quota_exceeded, too_large, conflict, "
        "gone, exec_error, image_not_found, no_such_file, is_a_directory, not_a_directory, "
        "not_found, method_not_allowed, internal"
    )
    message: str = Field(description="what was wrong and what to do about it")
    field: str | None = Field(None, description="the request field at fault, where one is")


class ErrorBody(BaseModel):
    """The body of every 4xx and 5xx response."""

    error: ErrorDetail


class CreateSandbox(Strict):
    """A new sandbox. Limits and defaults are those of `Sandbox.create`."""

    image: str = Field("base", description="image name, or a snapshot id (snap-...) you own")
    memory: int | str | None = Field("2g", description="memory limit: bytes, or like 512m, 2g")
    cpus: float | None = Field(1.0, gt=0, le=1024)
    pids: int | None = Field(1024, ge=8, le=1 << 22)
    disk: int | str | None = Field(
        "10g", description="bytes it may write: bytes, or like 10g (ENOSPC past it)"
    )
    inodes: int | None = Field(None, ge=16, le=1 << 32, description="files it may create")
    network: Literal["none", "registries", "full"] | dict[str, Any] = Field(
        "none",
        description="'none', 'registries', allow/deny lists (rockroll.sandbox.egress) or "
        "'full'; all but 'none' only for tokens allowed the network",
    )
    env: dict[str, str] = Field(default_factory=dict)
    workdir: str = "/"
    user: str | None = Field(
        None, min_length=1, max_length=64, description="who commands run as by default (root)"
    )
    max_output: int = Field(1 << 20, ge=1024, description="bytes kept per output stream")
    labels: dict[str, str] = Field(default_factory=dict, description="tags for list filters")
    rules: list[dict[str, Any]] = Field(
        default_factory=list, description="rules over the monitor's events (rockroll.sandbox.watch)"
    )
    idle_ttl: float | None = Field(
        None, gt=0, description="seconds without API activity before the server deletes it"
    )
    lifetime: float | None = Field(
        None, gt=0, description="hard deadline: seconds from now after which it is deleted"
    )


class NetworkChange(Strict):
    """A running sandbox's new egress policy."""

    network: Literal["none", "registries", "full"] | dict[str, Any] = Field(
        description="as at creation: 'none', 'registries', allow/deny lists or 'full'"
    )


class SandboxInfo(BaseModel):
    id: str
    status: Literal["creating", "running", "deleted", "lost"]
    reason: str | None = Field(None, description="why it ended (deleted or lost)")
    owner: str = Field(description="id of the token that created it")
    image: str
    memory: int = Field(description="memory limit in bytes (0: none)")
    labels: dict[str, str]
    created: float
    last_active: float
    idle_ttl: float | None
    deadline: float | None = Field(None, description="unix time of the hard deadline")
    spec: dict


class SandboxList(BaseModel):
    sandboxes: list[SandboxInfo]


class ExecRequest(Strict):
    """One command. `stream: true` answers with NDJSON lines as output arrives (see the API
    docs); otherwise the response is the ExecResult once the command has finished."""

    cmd: str | list[str] = Field(description="a string for bash -c, or an argv list")
    timeout: float | None = Field(600.0, description="seconds (at most a week); null: no limit")
    cwd: str | None = None
    env: dict[str, str] | None = None
    stdin: str | None = Field(None, description="text fed to the command's standard input")
    stream: bool = False
    user: str | None = Field(None, description="run as this user of the sandbox (name[:group])")


class SessionRequest(Strict):
    cwd: str | None = None
    env: dict[str, str] | None = None
    user: str | None = Field(None, description="run the shell as this user of the sandbox")


class SessionInfo(BaseModel):
    id: str
    sandbox: str


class SessionRun(Strict):
    cmd: str
    timeout: float | None = Field(600.0, description="seconds (at most a week); null: no limit")


class SnapshotInfo(BaseModel):
    id: str
    source: str
    created: float


class KillReport(BaseModel):
    left: int = Field(description="processes that could not be killed (stuck in the kernel)")


class ForkRequest(Strict):
    """Settings of the new sandbox; unset ones are the source sandbox's."""

    memory: int | str | None = None
    cpus: float | None = Field(None, gt=0, le=1024)
    env: dict[str, str] | None = None
    labels: dict[str, str] | None = None
    idle_ttl: float | None = Field(None, gt=0)
    lifetime: float | None = Field(None, gt=0)


class TokenRequest(Strict):
    """A new token. Limits left out get the server's defaults (not: no limit), unless
    `unlimited`; memory, cpus, pids and disk are totals over the token's live sandboxes (disk
    with its snapshots), execs the commands it may run at once."""

    name: str = Field(min_length=1, max_length=100)
    admin: bool = False
    max_sandboxes: int | None = Field(None, ge=0)
    max_memory: int | str | None = Field(None, description="bytes, or like 64g")
    max_cpus: float | None = Field(None, ge=0)
    max_pids: int | None = Field(None, ge=0)
    max_execs: int | None = Field(None, ge=1, description="concurrent commands")
    max_snapshots: int | None = Field(None, ge=0)
    max_disk: int | str | None = Field(None, description="bytes, or like 500g")
    allow_network: bool = Field(False, description="may ask for network 'full'")
    unlimited: bool = Field(False, description="no default limits (only the ones given)")


class TokenInfo(BaseModel):
    id: str
    name: str
    admin: bool
    max_sandboxes: int | None
    max_memory: int | None
    created: float
    revoked: float | None = None
    max_cpus: float | None = None
    max_pids: int | None = None
    max_execs: int | None = None
    max_snapshots: int | None = None
    max_disk: int | None = None
    allow_network: bool = False
    unlimited: bool = False
    limits: dict[str, float | None] = Field(
        default_factory=dict, description="the limits that apply (defaults filled in)"
    )
    secret: str | None = Field(None, description="shown once, when the token is created")


class Health(BaseModel):
    status: Literal["ok"]
    version: str
    sandboxes: int = Field(description="live sandboxes")
    uptime: float
