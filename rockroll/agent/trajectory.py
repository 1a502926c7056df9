"""Trajectories in ATIF (Harbor's Agent Trajectory Interchange Format, v1.4), written after
every step so a crash loses nothing and a run can be resumed, replayed or trained on.

Local models add the exact prompt and completion token ids and logprobs to each agent step's
`metrics` (ATIF's own fields), so the trainer never re-tokenizes.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import uuid
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = "ATIF-v1.4"
AGENT_NAME = "rockroll"
AGENT_VERSION = "0.1.0"


class AtifToolCall(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tool_call_id: str
    function_name: str
    arguments: dict[str, Any]


class AtifResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source_call_id: str | None = None
    content: str


class AtifObservation(BaseModel):
    model_config = ConfigDict(extra="forbid")

    results: list[AtifResult] = Field(default_factory=list)


class AtifMetrics(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_tokens: int | None = None
    cost_usd: float | None = None
    prompt_token_ids: list[int] | None = None
    completion_token_ids: list[int] | None = None
    logprobs: list[float] | None = None
    extra: dict[str, Any] | None = None


class AtifStep(BaseModel):
    model_config = ConfigDict(extra="forbid")

    step_id: int
    timestamp: str | None = None
    source: Literal["system", "user", "agent"]
    model_name: str | None = None
    message: str
    reasoning_content: str | None = None
    tool_calls: list[AtifToolCall] | None = None
    observation: AtifObservation | None = None
    metrics: AtifMetrics | None = None
    extra: dict[str, Any] | None = None


class AtifAgent(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    version: str
    model_name: str | None = None
    extra: dict[str, Any] | None = None


class AtifFinalMetrics(BaseModel):
    model_config = ConfigDict(extra="forbid")

    total_prompt_tokens: int | None = None
    total_completion_tokens: int | None = None
    total_cached_tokens: int | None = None
    total_cost_usd: float | None = None
    total_steps: int | None = None
    extra: dict[str, Any] | None = None


class Trajectory(BaseModel):
    """The root ATIF object. rockroll keeps its run record (termination, events) in `extra`."""

    model_config = ConfigDict(extra="forbid")

    schema_version: str = SCHEMA_VERSION
    session_id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    agent: AtifAgent = Field(
        default_factory=lambda: AtifAgent(name=AGENT_NAME, version=AGENT_VERSION)
    )
    steps: list[AtifStep] = Field(default_factory=list)
    notes: str | None = None
    final_metrics: AtifFinalMetrics | None = None
    extra: dict[str, Any] | None = None

    def add(self, source: str, message: str, **fields: Any) -> AtifStep:
        step = AtifStep(
            step_id=len(self.steps) + 1,
            timestamp=dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
            source=source,  # type: ignore[arg-type]
            message=message,
            **fields,
        )
        self.steps.append(step)
        return step

    def save(self, path: Path) -> None:
        """Write atomically: a crash mid-write leaves the previous complete version."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(self.model_dump_json(indent=1, exclude_none=True))
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> Trajectory:
        return cls.model_validate_json(Path(path).read_text())


def validate_atif(data: dict) -> list[str]:
    """Problems that make `data` not a valid ATIF trajectory (empty when it is valid)."""
    try:
        traj = Trajectory.model_validate(data)
    except ValueError as exc:
        return [str(exc)]
    problems = []
    if not traj.schema_version.startswith("ATIF-v"):
        problems.append(f"schema_version {traj.schema_version!r} does not start with 'ATIF-v'")
    for index, step in enumerate(traj.steps, 1):
        where = f"step {index}"
        if step.step_id != index:
            problems.append(f"{where}: step_id is {step.step_id}, expected {index}")
        if step.source != "agent" and (step.tool_calls or step.metrics):
            problems.append(f"{where}: tool_calls and metrics belong to agent steps only")
        ids = {c.tool_call_id for c in step.tool_calls or []}
        for result in step.observation.results if step.observation else []:
            if result.source_call_id is not None and result.source_call_id not in ids:
                problems.append(
                    f"{where}: observation refers to unknown call {result.source_call_id}"
                )
        m = step.metrics
        ids, logprobs = (m.completion_token_ids, m.logprobs) if m else (None, None)
        if ids is not None and logprobs is not None and len(ids) != len(logprobs):
            problems.append(f"{where}: completion_token_ids and logprobs differ in length")
    return problems


def dumps(traj: Trajectory) -> str:
    return json.dumps(traj.model_dump(exclude_none=True))
