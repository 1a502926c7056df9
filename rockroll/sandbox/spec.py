"""What a sandbox is asked to be: validated once, stored with the sandbox, shown by `ls`."""

from __future__ import annotations

import functools
import json
import math
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import ErrorDetails

from rockroll.errors import InvalidArgument
from rockroll.sandbox.egress import Policy, PolicyError
from rockroll.sandbox.watch import RuleError, Rules

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def parse_size(
    value: int | str | None, field: str = "memory", minimum: int = 4 << 20
) -> int | None:
    """Bytes from 536870912, "512m", "2GiB"; None means no limit."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise InvalidArgument(f"{field} must be a size like 512m or 2g, got {value!r}")
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise InvalidArgument(f"{field} must be a size like 512m or 2g, got {value!r}")
        size = int(value)
    elif isinstance(value, str) and (m := _SIZE.match(value)):
        size = int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    else:
        raise InvalidArgument(f"{field} must be a size like 512m or 2g, got {value!r}")
    if size < minimum:
        why = " (a sandbox needs some memory)" if minimum == 4 << 20 else ""
        raise InvalidArgument(f"{field} must be at least {minimum} bytes{why}, got {value!r}")
    if size >= 1 << 62:
        raise InvalidArgument(f"{field} must be below 2^62 bytes, got {value!r}")
    return size


class SandboxSpec(BaseModel):
    """Resources and environment of one sandbox. Every field has a safe default."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    image: str = Field("base", description="image name, or a snapshot id (snap-...)")
    backend: Literal["bwrap", "podman"] = "bwrap"
    memory: int | None = Field(2 << 30, description="memory limit in bytes (swap not allowed)")
    cpus: float | None = Field(1.0, description="CPU quota in cores", gt=0, le=1024)
    pids: int | None = Field(1024, description="maximum number of processes", ge=8, le=1 << 22)
    network: Literal["none", "registries", "full"] | dict[str, Any] = Field(
        "none",
        description="'none': loopback only; 'registries': the package indexes only; a table of "
        "`allow` and `deny` entries (domains, addresses, networks, ports; rockroll.sandbox."
        "egress), with `via` (a network namespace) and `resolvers`; 'full': the host's "
        "network, when asked. All but 'full' can be changed while the sandbox runs",
    )
    env: dict[str, str] = Field(default_factory=dict)
    labels: dict[str, str] = Field(
        default_factory=dict, description="free-form tags, kept with the sandbox (list filters)"
    )
    workdir: str = Field("/", description="default directory for commands")
    user: str | None = Field(
        None,
        description="who commands run as when they name no user, like Docker's USER "
        '("app", "1000", "app:staff"); None: root',
        min_length=1,
        max_length=64,
    )
    ttl: float | None = Field(None, description="idle seconds before the sandbox is closed", gt=0)
    disk: int | None = Field(
        10 << 30,
        description="bytes the sandbox may write (its own filesystem: ENOSPC past it); "
        "None: no limit",
    )
    inodes: int | None = Field(
        None, description="files the sandbox may create (None: 1 per 16 KiB of disk)"
    )
    max_output: int = Field(1 << 20, description="bytes kept per stream (head+tail)", ge=1024)
    detached: bool = Field(False, description="outlive the creating process (CLI sandboxes)")
    profile: Literal["agent", "build"] = Field(
        "agent",
        description="'agent': for agents and tests; 'build': for image build steps "
        "(Dockerfile RUN), like `docker build`: the host's CA certificates too. Both run as "
        "root of the sandbox's own user namespace (an unprivileged host id), with Docker's "
        "default capabilities inside it",
    )

    monitor: bool = Field(
        True,
        description="record every program the sandbox starts and every connection it tries "
        "(seccomp user notification, bwrap backend) in its audit log, and apply `rules`",
    )
    rules: list[dict[str, Any]] = Field(
        default_factory=list,
        description="rules over the monitor's events (rockroll.sandbox.watch): what to flag, "
        "refuse or kill; `rockroll.safety.default_rules()` is the shipped set",
    )

    @field_validator("network")
    @classmethod
    def _valid_network(cls, v: str | dict[str, Any]) -> str | dict[str, Any]:
        check_network(v)
        return v

    def own_network(self) -> bool:
        """Whether the sandbox has a network namespace of its own (all but 'full')."""
        return self.network != "full"

    @field_validator("rules")
    @classmethod
    def _valid_rules(cls, v: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if v:
            problem = _rules_problem(json.dumps(v, sort_keys=True, default=str))
            if problem:
                raise ValueError(problem)
        return v

    @field_validator("workdir")
    @classmethod
    def _abs_workdir(cls, v: str) -> str:
        if not v.startswith("/") or "\0" in v:
            raise ValueError("must be an absolute path like /app")
        return v

    @field_validator("env")
    @classmethod
    def _env_names(cls, v: dict[str, str]) -> dict[str, str]:
        for key, val in v.items():
            if not key or "=" in key or "\0" in key or "\0" in val:
                raise ValueError(f"invalid variable {key!r}: names need no '=' and no NUL bytes")
        return v

    def base_env(self) -> dict[str, str]:
        env = {"PATH": DEFAULT_PATH, "HOME": "/root", "LANG": "C.UTF-8", "TERM": "dumb"}
        return env | self.env


@functools.lru_cache(maxsize=64)
def _rules_problem(rules_json: str) -> str | None:
    """What is wrong with a rule set, once per distinct set (records are read often, and
    compiling every rule's patterns each time would cost milliseconds)."""
    try:
        Rules(json.loads(rules_json))
    except RuleError as e:
        return str(e)
    return None


def check_network(setting: object) -> Policy:
    """The egress policy a `network` setting means; ValueError names what is wrong."""
    try:
        return Policy.from_setting(setting)
    except PolicyError as e:
        raise ValueError(str(e)) from None


def make_spec(**kwargs: object) -> SandboxSpec:
    """Build a spec from user arguments, turning validation errors into one clear message."""
    if "memory" in kwargs:
        kwargs["memory"] = parse_size(kwargs["memory"])  # type: ignore[arg-type]
    if "disk" in kwargs:
        kwargs["disk"] = parse_size(kwargs["disk"], "disk", 16 << 20)  # type: ignore[arg-type]
    try:
        return SandboxSpec(**kwargs)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = "; ".join(_problem(e) for e in exc.errors())
        raise InvalidArgument(f"invalid sandbox settings: {problems}") from None


def _problem(error: ErrorDetails) -> str:
    field = ".".join(str(p) for p in error["loc"]) or "argument"
    return f"{field}: {error['msg']} (got {error.get('input')!r})"
