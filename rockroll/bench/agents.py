"""Agents the runner can use. The harness's agents plug in through the same `Agent` shape."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Protocol

from pydantic import BaseModel

from rockroll.agent.loop import AgentLoop, build_agent_config
from rockroll.agent.tools.command import task_tools
from rockroll.errors import UsageError
from rockroll.models import Model, make_model
from rockroll.sandbox.sdk import Sandbox
from rockroll.tasks.schema import Task
from rockroll.tasks.workspace import put_files


class AgentResult(BaseModel):
    """What an agent reports; `trajectory` is a file path when the agent keeps one."""

    duration: float
    timed_out: bool = False
    exit_code: int | None = None
    output_tail: str = ""
    trajectory: str | None = None


class Agent(Protocol):
    name: str

    def run(self, task: Task, sandbox: Sandbox) -> AgentResult: ...


class OracleAgent:
    """Runs the task's reference solution, as the task formats' own oracle does."""

    name = "oracle"

    def run(self, task: Task, sandbox: Sandbox) -> AgentResult:
        started = time.monotonic()
        if task.solution is None:
            return AgentResult(duration=0.0, exit_code=None, output_tail="the task has no solution")
        solution = task.solution
        put_files(sandbox, solution.files)
        script = solution.path or "/tmp/rockroll-solution.sh"
        if solution.path is None:
            sandbox.write_text(script, solution.script, mode=0o755)
        res = sandbox.exec(["bash", script], timeout=task.agent_timeout, env=solution.env)
        if solution.path is None:
            sandbox.exec(["rm", "-f", script])
        return AgentResult(
            duration=time.monotonic() - started,
            timed_out=res.timed_out,
            exit_code=res.exit_code,
            output_tail=res.output[-2000:],
        )


class NoopAgent:
    """Does nothing: the floor every task must fail."""

    name = "noop"

    def run(self, task: Task, sandbox: Sandbox) -> AgentResult:
        return AgentResult(duration=0.0)


class HarnessAgent:
    """rockroll's own agent loop with a model (`--agent harness --model SPEC`).

    `scripted:DIR` may name a folder holding `<task id>.json` per task (replies for that task).
    Trajectories are written to `trajectory_dir/<task id>.json` after every step.
    """

    name = "harness"

    def __init__(self, model: str, trajectory_dir: Path | None = None, **config: object) -> None:
        self.model_spec = model
        self.trajectory_dir = trajectory_dir
        self.config = build_agent_config(config, where="the harness agent's settings")

    def _model(self, task: Task) -> Model:
        spec = self.model_spec
        if spec.startswith("scripted:") and Path(spec[9:]).is_dir():
            spec = f"scripted:{Path(spec[9:]) / task_file(task.id)}.json"
        return make_model(spec)

    def run(self, task: Task, sandbox: Sandbox) -> AgentResult:
        started = time.monotonic()
        path = self.trajectory_dir / f"{task_file(task.id)}.json" if self.trajectory_dir else None
        loop = AgentLoop(self._model(task), config=self.config, tools=task_tools(task))
        result = loop.run(task.instruction, sandbox, trajectory_path=path)
        return AgentResult(
            duration=time.monotonic() - started,
            timed_out=result.termination == "max_seconds",
            output_tail=json.dumps(result.record()),
            trajectory=str(path) if path else None,
        )


def task_file(task_id: str) -> str:
    """The file name (without suffix) of a task's scripted replies and of its trajectory."""
    return task_id.replace("/", "__")


AGENTS: dict[str, type] = {"oracle": OracleAgent, "noop": NoopAgent, "harness": HarnessAgent}


def make_agent(name: str, **options: object) -> Agent:
    """An agent by name; `harness` needs `model=SPEC`."""
    if name not in AGENTS:
        raise UsageError(f"unknown agent {name!r}; choose one of: {', '.join(AGENTS)}")
    if name == "harness":
        if not options.get("model"):
            raise UsageError("--agent harness needs --model SPEC (e.g. scripted:PATH)")
        return HarnessAgent(**options)  # type: ignore[arg-type]
    return AGENTS[name]()
