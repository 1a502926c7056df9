"""Summaries of a run: pass rates, times, failures by reason; as a table and as HTML."""

from __future__ import annotations

import html
import math
from collections import Counter, defaultdict

from rich.console import Console
from rich.table import Table

from rockroll.bench.runner import TaskResult

PHASES = ("build", "sandbox", "agent", "verify", "total")
# Who a failure is down to, by its reason: the agent (the verdict stands: with the oracle, whose
# solution is the task's own, that is the task), the task (a folder that is wrong however it is
# run), rockroll (it could not do what Docker would have), or the network (the task needs the
# internet at test time). Unknown reasons count as rockroll's: an unexplained failure is ours.
FAULTS: dict[str, str] = {
    "tests-failed": "agent",
    "no-tests": "agent",
    "wrong-answer": "agent",
    "agent-timeout": "agent",
    "verifier-timeout": "agent",
    "invalid-task": "task",
    "invalid-reward": "task",
    "setup-failed": "task",
    "before-failed": "task",
    "build-failed": "task",
    "service-unhealthy": "task",
    "needs-network": "network",
    "image-missing": "rockroll",
    "sandbox-error": "rockroll",
    "error": "rockroll",
}
FAULT_NAMES = {
    "agent": "the agent's work (verdict stands)",
    "task": "task at fault",
    "rockroll": "rockroll at fault",
    "network": "needs network",
}
SOLUTION_AGENTS = {"oracle"}  # their failures are the task's


def fault(result: TaskResult) -> str | None:
    """Whose a failed result is: agent, task, rockroll or network (None: it passed)."""
    if result.passed:
        return None
    who = FAULTS.get(result.reason or "", "rockroll")
    return "task" if who == "agent" and result.agent in SOLUTION_AGENTS else who


def summarize(results: list[TaskResult]) -> dict:
    by_category: dict[str, list[TaskResult]] = defaultdict(list)
    for r in results:
        by_category[r.category or "-"].append(r)
    return {
        "tasks": len(results),
        "passed": sum(r.passed for r in results),
        "pass_rate": _rate(results),
        "agents": sorted({r.agent for r in results}),
        "categories": {
            name: {"tasks": len(rs), "passed": sum(r.passed for r in rs), "pass_rate": _rate(rs)}
            for name, rs in sorted(by_category.items())
        },
        "times": {
            phase: _stats([r.times[phase] for r in results if phase in r.times]) for phase in PHASES
        },
        "failures": dict(Counter(r.reason or "?" for r in results if not r.passed).most_common()),
        "faults": _faults(results),
        "dimensions": _dimensions(results),
        "offline_rewritten": sum(bool(r.offline) for r in results),
        "safety": _safety(results),
        "redteam": redteam_summary(results),
    }


def redteam_summary(results: list[TaskResult]) -> dict:
    """For red-team tasks, by channel and by the attack's rule class: task success, the share
    of episodes that did anything a rule matched (unsafe), that ran the injected attack
    (followed) and in which it got through (attack success); and connections made out."""
    rows = [(r, r.safety["redteam"]) for r in results if "redteam" in r.safety]
    if not rows:
        return {}

    def group(key: str) -> dict[str, dict]:
        out: dict[str, list] = defaultdict(list)
        for r, v in rows:
            out[str(v.get(key))].append((r, v))
        return {k: _redteam_row(v) for k, v in sorted(out.items())}

    return {
        "all": _redteam_row(rows),
        "channels": group("channel"),
        "classes": group("class"),
        "outbound": sum(r.safety.get("outbound", 0) for r, _ in rows),
    }


def _redteam_row(rows: list) -> dict:
    n = len(rows)
    share = lambda xs: round(sum(xs) / n, 4)  # noqa: E731
    return {
        "tasks": n,
        "task_success": share([r.passed for r, _ in rows]),
        "unsafe": share([bool(r.safety.get("flagged")) for r, _ in rows]),
        "followed": share([v["followed"] for _, v in rows]),
        "attack_success": share([v["succeeded"] for _, v in rows]),
    }


def _safety(results: list[TaskResult]) -> dict:
    """Tasks whose agent did something a rule matched, and how often each rule did."""
    rules: Counter[str] = Counter()
    for r in results:
        rules.update(r.safety.get("rules", {}))
    return {
        "watched": sum(bool(r.safety) for r in results),
        "flagged_tasks": sum(bool(r.safety.get("flagged")) for r in results),
        "refused": sum(r.safety.get("refused", 0) for r in results),
        "killed": sum(r.safety.get("killed", 0) for r in results),
        "rules": dict(rules.most_common()),
    }


def _faults(results: list[TaskResult]) -> dict[str, dict]:
    """Failures grouped by whose they are, each with its reasons and tasks."""
    groups: dict[str, dict] = {}
    for r in sorted(results, key=lambda r: r.task):
        if (who := fault(r)) is None:
            continue
        group = groups.setdefault(who, {"tasks": 0, "reasons": {}, "examples": []})
        group["tasks"] += 1
        group["reasons"][r.reason or "?"] = group["reasons"].get(r.reason or "?", 0) + 1
        if len(group["examples"]) < 5:
            group["examples"].append(r.task)
    order = list(FAULT_NAMES)
    return dict(sorted(groups.items(), key=lambda kv: order.index(kv[0])))


def _dimensions(results: list[TaskResult]) -> dict[str, float]:
    """The mean of each named reward dimension over the tasks that report it."""
    seen: defaultdict[str, list[float]] = defaultdict(list)
    for r in results:
        for key, value in r.rewards.items():
            seen[key].append(value)
    return {k: round(sum(v) / len(v), 4) for k, v in sorted(seen.items())}


def _rate(results: list[TaskResult]) -> float:
    return round(sum(r.passed for r in results) / len(results), 4) if results else 0.0


def _stats(values: list[float]) -> dict:
    if not values:
        return {"mean": None, "p95": None}
    ordered = sorted(values)
    p95 = ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]
    return {"mean": round(sum(values) / len(values), 3), "p95": round(p95, 3)}


def render(summary: dict, console: Console) -> None:
    head = Table(title="results", show_header=True)
    head.add_column("category")
    head.add_column("tasks", justify="right")
    head.add_column("passed", justify="right")
    head.add_column("pass rate", justify="right")
    for name, row in summary["categories"].items():
        head.add_row(name, str(row["tasks"]), str(row["passed"]), f"{row['pass_rate']:.1%}")
    head.add_row(
        "[bold]all[/]",
        str(summary["tasks"]),
        str(summary["passed"]),
        f"[bold]{summary['pass_rate']:.1%}[/]",
    )
    console.print(head)
    times = Table("phase", "mean s", "p95 s", title="times per task")
    for phase, row in summary["times"].items():
        if row["mean"] is not None:
            times.add_row(phase, f"{row['mean']:.2f}", f"{row['p95']:.2f}")
    console.print(times)
    safety = summary.get("safety") or {}
    if safety.get("flagged_tasks"):
        hits = ", ".join(f"{k} {v}" for k, v in list(safety["rules"].items())[:8])
        console.print(
            f"safety: {safety['flagged_tasks']} of {safety['watched']} watched tasks did what a "
            f"rule matched ({safety['refused']} refused, {safety['killed']} killed): {hits}"
        )
    if summary.get("redteam"):
        render_redteam(summary["redteam"], console)
    if summary.get("faults"):
        fails = Table("whose", "tasks", "reasons", "e.g.", title="failures")
        for who, group in summary["faults"].items():
            reasons = ", ".join(f"{k} {v}" for k, v in group["reasons"].items())
            fails.add_row(
                FAULT_NAMES.get(who, who),
                str(group["tasks"]),
                reasons,
                ", ".join(group["examples"]),
            )
        console.print(fails)
    if summary.get("dimensions"):
        dims = Table("reward dimension", "mean", title="rewards by dimension")
        for key, mean in summary["dimensions"].items():
            dims.add_row(key, f"{mean:.3f}")
        console.print(dims)
    if summary["offline_rewritten"]:
        console.print(
            f"{summary['offline_rewritten']} task(s) verified with bootstrap steps rewritten to "
            "run offline (see `offline` in results.jsonl)"
        )


def render_redteam(rt: dict, console: Console) -> None:
    table = Table(
        "channel / class", "tasks", "task success", "unsafe", "followed", "attack success",
        title="red team",
    )  # fmt: skip
    parts = [("channel " + k, v) for k, v in rt["channels"].items()]
    parts += [("class " + k, v) for k, v in rt["classes"].items()]
    for name, row in [*parts, ("[bold]all[/]", rt["all"])]:
        table.add_row(
            name,
            str(row["tasks"]),
            f"{row['task_success']:.1%}",
            f"{row['unsafe']:.1%}",
            f"{row['followed']:.1%}",
            f"{row['attack_success']:.1%}",
        )
    console.print(table)
    console.print(f"red team: {rt['outbound']} connection(s) made out of the sandboxes")


def to_html(results: list[TaskResult], summary: dict, title: str) -> str:
    """A self-contained page: the summary, then one row per task with its verifier output."""
    esc = html.escape
    rows = []
    for r in sorted(results, key=lambda r: (r.passed, r.task)):
        status = "pass" if r.passed else "fail"
        detail = esc(r.error or r.verifier_tail or "")
        rows.append(
            f"<tr class={status}><td>{esc(r.task)}</td><td>{esc(r.category or '-')}</td>"
            f"<td>{status}</td><td>{r.reward:g}</td><td>{esc(r.reason or '')}</td>"
            f"<td>{r.times.get('total', 0):.2f}</td>"
            f"<td><details><summary>output</summary><pre>{detail}</pre></details></td></tr>"
        )
    cats = "".join(
        f"<tr><td>{esc(n)}</td><td>{c['tasks']}</td><td>{c['passed']}</td>"
        f"<td>{c['pass_rate']:.1%}</td></tr>"
        for n, c in summary["categories"].items()
    )
    fails = "".join(
        f"<tr><td>{esc(k)}</td><td>{v}</td></tr>" for k, v in summary["failures"].items()
    )
    red = ""
    if rt := summary.get("redteam"):
        parts = [("channel " + k, v) for k, v in rt["channels"].items()]
        parts += [("class " + k, v) for k, v in rt["classes"].items()]
        red = "".join(
            f"<tr><td>{esc(name)}</td><td>{row['tasks']}</td><td>{row['task_success']:.1%}</td>"
            f"<td>{row['unsafe']:.1%}</td><td>{row['followed']:.1%}</td>"
            f"<td>{row['attack_success']:.1%}</td></tr>"
            for name, row in [*parts, ("all", rt["all"])]
        )
        red = (
            "<table><tr><th>red team</th><th>tasks</th><th>task success</th><th>unsafe</th>"
            f"<th>followed</th><th>attack success</th></tr>{red}</table>"
            f"<p>{rt['outbound']} connection(s) made out of the sandboxes</p>"
        )
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{esc(title)}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}}
tr.pass td:nth-child(3){{color:#070}}tr.fail td:nth-child(3){{color:#b00}}
pre{{max-width:80em;white-space:pre-wrap}}</style></head><body>
<h1>{esc(title)}</h1>
<p><b>{summary["passed"]}/{summary["tasks"]}</b> passed ({summary["pass_rate"]:.1%}),
agent: {esc(", ".join(summary["agents"]))}</p>
<table><tr><th>category</th><th>tasks</th><th>passed</th><th>rate</th></tr>{cats}</table>
<table><tr><th>failure reason</th><th>tasks</th></tr>{fails}</table>{red}
<table><tr><th>task</th><th>category</th><th>result</th><th>reward</th><th>reason</th>
<th>seconds</th><th>verifier</th></tr>{"".join(rows)}</table></body></html>
"""
