"""A task, whatever format it came from: what the agent is told, where it runs, how it is judged.

Every loader (Terminal-Bench 1.0, Harbor/Terminal-Bench 2.x, HumanEval, reasoning-gym) returns
this one model; the runner, the environments and the trainer only ever see it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class Health(BaseModel):
    model_config = ConfigDict(extra="forbid")

    test: list[str] = Field(description='argv; ["sh", "-c", CMD] for CMD-SHELL and strings')
    interval: float = 30.0
    timeout: float = 30.0
    retries: int = 3
    start_period: float = 0.0


class Service(BaseModel):
    """One extra service: where its image comes from and how it starts."""

    model_config = ConfigDict(extra="forbid")

    name: str
    dockerfile: Path | None = None
    context: Path | None = None
    image: str | None = None
    command: list[str] = Field(default_factory=list, description="argv; [] for the image's")
    env: dict[str, str] = Field(default_factory=dict)
    workdir: str | None = None
    health: Health | None = None
    depends_on: list[str] = Field(default_factory=list)
    address: str | None = Field(None, description="a fixed address (Compose's ipv4_address)")
    dns: list[str] = Field(default_factory=list, description="name servers, e.g. a sidecar's")
    files: dict[str, Path] = Field(
        default_factory=dict,
        description="bind mounts of the task's own files: sandbox path -> host path, copied in",
    )
    volumes: list[str] = Field(default_factory=list, description="the named volumes it mounts")
    skipped: list[str] = Field(
        default_factory=list, description="what Compose asked that is not done, for the log"
    )


class Environment(BaseModel):
    """Where the agent works: a built image, or a Dockerfile to build one from."""

    model_config = ConfigDict(extra="forbid")

    image: str | None = Field(None, description="a built image name (e.g. 'base')")
    dockerfile: Path | None = Field(None, description="Dockerfile on the host")
    context: Path | None = Field(None, description="build context directory on the host")
    workdir: str | None = Field(None, description="working directory (default: the image's)")
    env: dict[str, str] = Field(default_factory=dict)
    build_timeout: float | None = Field(
        None, description="seconds the image build may take (None: each step 30 min)"
    )
    services: list[Service] = Field(
        default_factory=list,
        description="Compose's extra services, in start order (rockroll.tasks.compose)",
    )
    main: Service | None = Field(
        None, description="the agent's own Compose entry, for its address and dns"
    )
    subnet: str | None = Field(None, description="the services' network, when Compose names one")


class Resources(BaseModel):
    model_config = ConfigDict(extra="forbid")

    memory: str = "2g"
    cpus: float = 1.0
    pids: int = 1024
    disk: str = Field("10g", description="what the sandbox may write (Harbor's storage_mb)")


class Verifier(BaseModel):
    """How success is decided, after the agent has finished.

    `script`: `files` (host path or text) are copied into the sandbox, then `command` runs there;
    the reward comes from `reward_files` if one was written, else from the exit status (and, for
    `parser="pytest"`, the pytest summary). `python`: `function` ("module:name") is called on the
    host with the sandbox and `args`, and returns the reward.
    """

    model_config = ConfigDict(extra="forbid")

    kind: Literal["script", "python"] = "script"
    command: str | None = None
    files: dict[str, Path | str] = Field(
        default_factory=dict, description="sandbox path -> host path (file or dir) or text"
    )
    env: dict[str, str] = Field(default_factory=dict)
    reward_files: list[str] = Field(default_factory=list)
    parser: Literal["exit_code", "pytest"] = "exit_code"
    function: str | None = None
    args: dict = Field(default_factory=dict)
    timeout: float = 120.0
    workdir: str | None = None
    before: list[str] = Field(
        default_factory=list,
        description="shell scripts run as root once the agent's processes are killed and before "
        "the tests: what a task set up for the agent alone comes out again (a red-team "
        "injection, say)",
    )


class Solution(BaseModel):
    """The reference solution the `oracle` agent runs: a shell script, as text.

    `files` are copied in first; when `path` is set the script is run from there (Harbor's
    `/solution/solve.sh`, beside the files it uses), else from a temporary file."""

    model_config = ConfigDict(extra="forbid")

    script: str
    files: dict[str, Path | str] = Field(default_factory=dict)
    path: str | None = Field(None, description="where the script is in the sandbox, if copied")
    env: dict[str, str] = Field(default_factory=dict)


class ToolSpec(BaseModel):
    """An extra tool the harness offers for this task: `command` runs in the sandbox with
    `bash -c`, each argument in the environment as `ARG_<NAME>`, and what it prints is the
    tool's answer."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$")
    description: str
    parameters: dict = Field(
        default_factory=lambda: {"type": "object", "properties": {}, "additionalProperties": False},
        description="the JSON schema of its arguments (an object of strings, numbers or booleans)",
    )
    command: str
    timeout: float = 60.0


class Metadata(BaseModel):
    model_config = ConfigDict(extra="allow")

    difficulty: str | None = None
    category: str | None = None
    tags: list[str] = Field(default_factory=list)


class Task(BaseModel):
    """One task. `files` are placed in the sandbox before the agent starts."""

    model_config = ConfigDict(extra="forbid")

    id: str
    source: str = Field(description="terminal-bench, harbor, humaneval, reasoning-gym, ...")
    path: Path | None = Field(None, description="the task's folder, when it has one")
    instruction: str
    environment: Environment = Field(default_factory=lambda: Environment(image="base"))
    files: dict[str, Path | str] = Field(default_factory=dict)
    setup: list[str] = Field(
        default_factory=list,
        description="shell scripts run as root in the working directory once `files` are "
        "placed, before the agent starts",
    )
    tools: list[ToolSpec] = Field(
        default_factory=list, description="extra tools the harness offers for this task"
    )
    resources: Resources = Field(default_factory=Resources)
    network: Literal["none", "full"] = "none"
    agent_timeout: float = 600.0
    verifier: Verifier
    solution: Solution | None = None
    metadata: Metadata = Field(default_factory=Metadata)
