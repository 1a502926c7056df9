"""Summaries of a run: pass rates, times, failures by reason; as a table and as HTML."""

from __future__ import annotations

import html
import math
from collections import Counter, defaultdict

from rich.console import Console
from rich.table import Table

from rockroll.bench.runner import TaskResult

PHASES = ("build", "sandbox", "agent", "verify", "total")


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
        "offline_rewritten": sum(bool(r.offline) for r in results),
    }


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
    if summary["failures"]:
        fails = Table("reason", "tasks", title="failures")
        for reason, count in summary["failures"].items():
            fails.add_row(reason, str(count))
        console.print(fails)
    if summary["offline_rewritten"]:
        console.print(
            f"{summary['offline_rewritten']} task(s) verified with bootstrap steps rewritten to "
            "run offline (see `offline` in results.jsonl)"
        )


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
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{esc(title)}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}}
tr.pass td:nth-child(3){{color:#070}}tr.fail td:nth-child(3){{color:#b00}}
pre{{max-width:80em;white-space:pre-wrap}}</style></head><body>
<h1>{esc(title)}</h1>
<p><b>{summary["passed"]}/{summary["tasks"]}</b> passed ({summary["pass_rate"]:.1%}),
agent: {esc(", ".join(summary["agents"]))}</p>
<table><tr><th>category</th><th>tasks</th><th>passed</th><th>rate</th></tr>{cats}</table>
<table><tr><th>failure reason</th><th>tasks</th></tr>{fails}</table>
<table><tr><th>task</th><th>category</th><th>result</th><th>reward</th><th>reason</th>
<th>seconds</th><th>verifier</th></tr>{"".join(rows)}</table></body></html>
"""
