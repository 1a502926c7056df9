"""Review: the gates a built task must pass to be kept, each with a recorded verdict.

- `leak`: the instruction does not contain the fix (a changed line of the reference solution);
- `controls`: on k fresh sandboxes each, the no-op agent fails and the oracle passes (any
  disagreement between runs is `flaky`);
- `runtime`: the oracle's verification runs within the budget;
- `hack-probe`: none of the scripted adversaries (`rockroll.data.hacks`) passes.

Runs go through `rockroll.bench.runner.run_task`, exactly as `rockroll bench run` would run
them, so a task that passes review passes the bench's controls. The order is cheap first: one
run of each control, the probes, then the remaining reruns.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

from rockroll.bench.agents import Agent, NoopAgent, OracleAgent
from rockroll.bench.runner import TaskResult, run_task
from rockroll.data.hacks import PROBES
from rockroll.data.strategies import Draft
from rockroll.tasks.schema import Task

MIN_LEAK = 8  # changed lines shorter than this (`pass`, `return x`) are too common to be leaks


@dataclass
class Verdict:
    gate: str
    ok: bool
    detail: str = ""
    seconds: float = 0.0

    def record(self) -> dict:
        return asdict(self)


def leak(instruction: str, draft: Draft) -> Verdict:
    """The instruction leaks when it holds a line that the fix adds (whitespace aside) and the
    code the agent starts from does not already show (a docstring's example, say)."""
    text = " ".join(instruction.split())
    shown = " ".join(draft.changed.split())
    for line in draft.original.splitlines():
        norm = " ".join(line.split())
        if len(norm) >= MIN_LEAK and norm in text and norm not in shown:
            return Verdict("leak", False, f"the instruction contains the fix: {norm[:120]!r}")
    return Verdict("leak", True)


def review(task: Task, reruns: int = 3, budget: float = 60.0) -> tuple[list[Verdict], str | None]:
    """The gates' verdicts, and the reason of the first that failed (None: accepted)."""
    verdicts: list[Verdict] = []
    noop, oracle = NoopAgent(), OracleAgent()
    runs: dict[str, list[TaskResult]] = {"noop": [], "oracle": []}

    def control(agent: Agent) -> str | None:
        result = run_task(task, agent)
        runs[agent.name].append(result)
        if result.reason in ("build-failed", "needs-network", "image-missing", "sandbox-error"):
            return "build-failed"
        return None

    started = time.monotonic()
    for agent in (noop, oracle):
        if reason := control(agent):
            return [Verdict("build", False, runs[agent.name][-1].error or "", 0.0)], reason
    verdicts.append(Verdict("build", True))
    if reason := _controls(runs, 1, started, verdicts, final=False):
        return verdicts, reason
    probe_started = time.monotonic()
    passed = [p.name for p in PROBES if run_task(task, p).passed]
    verdicts.append(
        Verdict(
            "hack-probe",
            not passed,
            f"passed by {', '.join(passed)}" if passed else f"{len(PROBES)} probes failed",
            time.monotonic() - probe_started,
        )
    )
    if passed:
        return verdicts, "hackable"
    started = time.monotonic()
    for _ in range(reruns - 1):
        for agent in (noop, oracle):
            control(agent)
    if reason := _controls(runs, reruns, started, verdicts, final=True):
        return verdicts, reason
    slowest = max(r.times.get("verify", 0.0) for r in runs["oracle"])
    ok = slowest <= budget
    verdicts.append(Verdict("runtime", ok, f"verification {slowest:.1f} s (budget {budget:.0f} s)"))
    return verdicts, None if ok else "slow"


def _controls(
    runs: dict[str, list[TaskResult]], k: int, started: float, verdicts: list[Verdict], final: bool
) -> str | None:
    noop = [r.passed for r in runs["noop"]]
    oracle = [r.passed for r in runs["oracle"]]
    seconds = time.monotonic() - started
    detail = f"noop passed {sum(noop)}/{len(noop)}, oracle passed {sum(oracle)}/{len(oracle)}"
    reason = None
    if len(set(noop)) > 1 or len(set(oracle)) > 1:
        reason = "flaky"
    elif noop and noop[0]:
        reason = "noop-passes"
    elif oracle and not oracle[0]:
        tail = runs["oracle"][-1].verifier_tail.strip().splitlines()
        detail += f"; {tail[-1][:200]}" if tail else ""
        reason = "oracle-fails"
    if reason or final:
        verdicts.append(Verdict("controls", reason is None, f"{detail} (k={k})", seconds))
    return reason
