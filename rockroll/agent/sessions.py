"""Saved agent sessions, so a crashed, interrupted or finished run can be continued.

A session lives in `$ROCKROLL_HOME/sessions/<id>/`: `session.json` (how the run was started and
the loop's whole state, rewritten atomically after every step) and `trajectory.json` (ATIF).
The sandbox is detached, so it outlives a crash of the process that drove it; when it is gone,
`replay` rebuilds its state by re-running the recorded tool calls in a fresh sandbox.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from rockroll.agent.loop import AgentConfig, AgentLoop, LoopState, build_agent_config
from rockroll.agent.tools import ToolContext, validate
from rockroll.errors import SandboxError
from rockroll.sandbox.paths import rockroll_home
from rockroll.sandbox.sdk import Sandbox

# Tools that change nothing in the sandbox, or end the episode: never replayed.
_NOT_REPLAYED = frozenset({"submit", "todo", "read_file", "glob", "grep", "list_dir"})


class SessionError(SandboxError):
    """A session that cannot be found, read or continued; the message says what to do."""


class SessionRecord(BaseModel):
    """How a run was started, and its state after the last step."""

    id: str
    created: str = Field(default_factory=lambda: dt.datetime.now(dt.UTC).isoformat())
    kind: str = Field("run", description="'run' (headless) or 'chat'")
    instruction: str
    model: str
    task: str | None = None
    image: str = "base"
    workdir: str = "/root"
    sandbox_id: str | None = None
    config: dict[str, Any] = Field(default_factory=dict)
    state: LoopState

    def agent_config(self, **overrides: Any) -> AgentConfig:
        values = {**self.config, **{k: v for k, v in overrides.items() if v is not None}}
        return build_agent_config(values, where=f"the settings of session {self.id}")


def sessions_dir() -> Path:
    """`$ROCKROLL_SESSIONS`, else `$ROCKROLL_HOME/sessions`."""
    override = os.environ.get("ROCKROLL_SESSIONS")
    return Path(override) if override else rockroll_home() / "sessions"


def session_dir(session_id: str) -> Path:
    return sessions_dir() / session_id


def new_record(state: LoopState, config: AgentConfig, **fields: Any) -> SessionRecord:
    return SessionRecord(
        id=state.trajectory.session_id, state=state, config=asdict(config), **fields
    )


def save(record: SessionRecord) -> Path:
    """Write the record atomically: a crash mid-write keeps the previous step's version."""
    folder = session_dir(record.id)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "session.json"
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(record.model_dump_json())
    os.replace(tmp, path)
    return path


def resolve(prefix: str) -> str:
    """The session id that `prefix` starts (ids are long; any unique prefix will do)."""
    root = sessions_dir()
    names = (
        sorted(p.name for p in root.iterdir() if (p / "session.json").is_file())
        if (root.is_dir())
        else []
    )
    matches = [n for n in names if n.startswith(prefix)] if prefix else []
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise SessionError(
            f"no session {prefix!r} in {root}; `rockroll agent sessions` lists the saved ones"
        )
    raise SessionError(f"{prefix!r} matches {len(matches)} sessions; give more of the id")


def load(prefix: str) -> SessionRecord:
    session_id = resolve(prefix)
    path = session_dir(session_id) / "session.json"
    try:
        return SessionRecord.model_validate_json(path.read_text())
    except (OSError, ValidationError) as exc:
        raise SessionError(f"cannot read session {session_id} from {path}: {exc}") from None


def list_records() -> list[SessionRecord]:
    """Saved sessions, newest first; unreadable ones are skipped."""
    root = sessions_dir()
    records = []
    for path in root.glob("*/session.json") if root.is_dir() else []:
        try:
            records.append(SessionRecord.model_validate_json(path.read_text()))
        except (OSError, ValidationError):
            continue
    return sorted(records, key=lambda r: r.created, reverse=True)


def reconnect(record: SessionRecord) -> Sandbox | None:
    """The session's sandbox if it is still running, else None."""
    if not record.sandbox_id:
        return None
    try:
        sb = Sandbox.connect(record.sandbox_id)
        sb.exec(["true"], timeout=10)
    except SandboxError:
        return None
    return sb


def replay(loop: AgentLoop, state: LoopState, sandbox: Sandbox, workdir: str) -> list[str]:
    """Re-run the recorded tool calls that change the sandbox, in order, in `sandbox`.

    Returns a line per call whose result now differs in failing where it had succeeded, so
    the caller can say the rebuilt state may not be the original.
    """
    ctx = ToolContext(sandbox=sandbox, workdir=workdir, command_timeout=120.0)
    problems: list[str] = []
    try:
        for step in state.trajectory.steps:
            results = {r.source_call_id: r.content for r in (step.observation or _EMPTY).results}
            for call in step.tool_calls or []:
                tool = loop.by_name.get(call.function_name)
                if tool is None or tool.name in _NOT_REPLAYED or validate(tool, call.arguments):
                    continue
                result = tool.run(ctx, dict(call.arguments))
                before = results.get(call.tool_call_id, "")
                if result.error and not before.startswith("error"):
                    problems.append(f"step {step.step_id}: {tool.name} failed on replay")
    finally:
        ctx.close()
    return problems


class _Empty(BaseModel):
    results: list = Field(default_factory=list)


_EMPTY = _Empty()
