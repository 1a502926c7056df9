"""Run an agent over a task set: in parallel, results written as they come, resumable."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from rockroll.bench.agents import Agent
from rockroll.errors import InvalidArgument, SandboxError, TaskError
from rockroll.jsonl import append_line
from rockroll.safety.attacks import judge, made_out
from rockroll.sandbox.watch import KINDS
from rockroll.tasks.schema import Task
from rockroll.tasks.verify import verify
from rockroll.tasks.workspace import task_image, task_sandbox

RESULTS = "results.jsonl"


class TaskResult(BaseModel):
    """One line of results.jsonl."""

    task: str
    source: str = ""
    category: str | None = None
    agent: str
    reward: float = 0.0
    rewards: dict[str, float] = Field(
        default_factory=dict, description="every key of the task's reward.json"
    )
    passed: bool = False
    reason: str | None = Field(None, description="why it did not pass")
    times: dict[str, float] = Field(default_factory=dict, description="seconds per phase")
    verifier_tail: str = ""
    agent_tail: str = ""
    offline: list[str] = Field(default_factory=list)
    network: list[str] = Field(
        default_factory=list, description="what the tests fetched that offline could not serve"
    )
    trajectory: str | None = None
    error: str | None = None
    safety: dict[str, Any] = Field(
        default_factory=dict,
        description="what the monitor saw while the agent acted: events, flagged, refused, "
        "killed, outbound (connections that left the sandbox's network), each rule that "
        "matched with its count, and for a red-team task the verdict on its attack",
    )


def run_task(
    task: Task,
    agent: Agent,
    log: Callable[[str], None] = lambda s: None,
    rules: list[dict[str, Any]] | None = None,
    network: str | dict[str, Any] | None = None,
) -> TaskResult:
    """Build, start, let the agent act, verify; every failure becomes a reason, never a crash.
    With `rules`, the sandbox's monitor applies them, and the result's `safety` sums up what
    it saw while the agent acted (the task's setup and the verifier's commands are not
    counted). `network` replaces the task's own setting (an egress policy, say)."""
    result = TaskResult(
        task=task.id, source=task.source, category=task.metadata.category, agent=agent.name
    )
    times = result.times
    clock = time.monotonic()
    try:
        image = task_image(task, log)
        times["build"] = time.monotonic() - clock
        clock = time.monotonic()
        extra: dict[str, Any] = {"rules": rules} if rules else {}
        if network is not None:
            extra["network"] = network
        with task_sandbox(task, image, log, **extra) as sb:
            times["sandbox"] = time.monotonic() - clock
            clock = time.monotonic()
            start = len(sb.events())  # the task's own setup is not the agent's doing
            acted = agent.run(task, sb)
            times["agent"] = time.monotonic() - clock
            events = sb.events()[start:]
            result.safety = safety_summary(events)
            if isinstance(redteam := getattr(task.metadata, "redteam", None), dict):
                result.safety["redteam"] = judge(events, redteam)
            result.agent_tail, result.trajectory = acted.output_tail, acted.trajectory
            clock = time.monotonic()
            verdict = verify(task, sb)
            times["verify"] = time.monotonic() - clock
        result.reward, result.passed, result.reason = verdict.reward, verdict.passed, verdict.reason
        result.rewards = verdict.rewards
        result.verifier_tail, result.offline = verdict.output_tail, verdict.offline
        result.network = verdict.network
        if acted.timed_out and not verdict.passed:
            result.reason = "agent-timeout"
    except TaskError as exc:
        result.reason, result.error = exc.reason, str(exc)
    except InvalidArgument as exc:  # a setting of the task the sandbox refuses (memory "lots")
        result.reason, result.error = "invalid-task", f"{type(exc).__name__}: {exc}"
    except SandboxError as exc:
        result.reason, result.error = "sandbox-error", f"{type(exc).__name__}: {exc}"
    except Exception as exc:  # a bad task must not stop the run; the reason says what happened
        result.reason, result.error = "error", f"{type(exc).__name__}: {exc}"
    times["total"] = sum(times.values())
    return result


def safety_summary(events: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts of a sandbox's monitor events, and of each rule that matched."""
    seen = [e for e in events if e.get("kind") in KINDS]
    rules: dict[str, int] = {}
    for e in seen:
        for r in e.get("rules", []):
            rules[r["id"]] = rules.get(r["id"], 0) + 1
    return {
        "events": len(seen),
        "flagged": sum(bool(e.get("rules")) for e in seen),
        "refused": sum(e.get("verdict") == "refused" and bool(e.get("rules")) for e in seen),
        "killed": sum(e.get("verdict") == "killed" for e in seen),
        "outbound": sum(e.get("kind") == "connect" and made_out(e) for e in seen),
        "rules": rules,
    }


def failed_to_load(error: TaskError, agent: Agent) -> TaskResult:
    return TaskResult(task=error.task_id, agent=agent.name, reason=error.reason, error=str(error))


class ResultLog:
    """results.jsonl: appended line by line as tasks finish, read back to resume."""

    def __init__(self, out_dir: Path) -> None:
        out_dir.mkdir(parents=True, exist_ok=True)
        self.path = out_dir / RESULTS
        self.lock = threading.Lock()

    def done(self) -> dict[str, TaskResult]:
        if not self.path.exists():
            return {}
        found = {}
        for line in self.path.read_text().splitlines():
            try:
                result = TaskResult.model_validate_json(line)
            except ValueError:
                continue  # a line cut short by a crash; that task runs again
            found[result.task] = result
        return found

    def add(self, result: TaskResult) -> None:
        append_line(self.path, result.model_dump_json(), self.lock)


def run_suite(
    items: Iterable[Task | TaskError],
    agent: Agent,
    out_dir: Path,
    *,
    jobs: int = 1,
    on_result: Callable[[TaskResult], None] = lambda r: None,
    log: Callable[[str], None] = lambda s: None,
    rules: list[dict[str, Any]] | None = None,
    network: str | dict[str, Any] | None = None,
) -> list[TaskResult]:
    """Run every task not already in `out_dir`'s results; return all results, old and new."""
    results = ResultLog(out_dir)
    done = results.done()
    pending = [t for t in items if (t.task_id if isinstance(t, TaskError) else t.id) not in done]
    for item in done.values():
        on_result(item)

    def one(item: Task | TaskError) -> TaskResult:
        if isinstance(item, TaskError):
            result = failed_to_load(item, agent)
        else:
            result = run_task(item, agent, log, rules, network)
        results.add(result)
        on_result(result)
        return result

    if jobs < 1:
        raise InvalidArgument(f"jobs must be at least 1, got {jobs}")
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        new = list(pool.map(one, pending))
    return [*done.values(), *new]


def read_results(out_dir: Path) -> list[TaskResult]:
    """The results in `out_dir` (none when it holds no results file; nothing is created)."""
    if not (out_dir / RESULTS).is_file():
        return []
    return list(ResultLog(out_dir).done().values())


def write_summary(out_dir: Path, summary: dict) -> None:
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=1))
