"""Agents the runner can use. The harness's agents plug in through the same `Agent` shape."""

from __future__ import annotations

import time
from typing import Protocol

from pydantic import BaseModel

from rockroll.sandbox.sdk import Sandbox
from rockroll.tasks.model import Task
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
        put_files(sandbox, task.solution.files)
        sandbox.write_text("/tmp/rockroll-solution.sh", task.solution.script, mode=0o755)
        res = sandbox.exec(["bash", "/tmp/rockroll-solution.sh"], timeout=task.agent_timeout)
        sandbox.exec(["rm", "-f", "/tmp/rockroll-solution.sh"])
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


AGENTS: dict[str, type] = {"oracle": OracleAgent, "noop": NoopAgent}


def make_agent(name: str) -> Agent:
    try:
        return AGENTS[name]()
    except KeyError:
        raise ValueError(f"unknown agent {name!r}; choose one of: {', '.join(AGENTS)}") from None
