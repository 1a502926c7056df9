"""The dataset's record: `manifest.jsonl`, a line per source and per candidate as each is
decided, and the funnel read back from it (for the terminal and as an HTML page).

A candidate's line holds where it came from (source, revision, strategy, file, function, the
change), its tests (fail-to-pass, pass-to-pass), every gate's verdict, whether it was accepted
and why not, and its timings. A run that is killed loses at most the candidates in flight: the
next run with `--resume` reads the lines and skips what they decided.
"""

from __future__ import annotations

import html
import json
import threading
from collections import Counter
from pathlib import Path

from rockroll.jsonl import append_line

MANIFEST = "manifest.jsonl"
STAGES = ("candidates", "drafts", "built", "reviewed", "accepted")


class Manifest:
    """manifest.jsonl in a dataset folder: appended line by line, read back to resume."""

    def __init__(self, dataset: Path) -> None:
        dataset.mkdir(parents=True, exist_ok=True)
        self.path = dataset / MANIFEST
        self.lock = threading.Lock()

    def lines(self) -> list[dict]:
        if not self.path.exists():
            return []
        found = []
        for line in self.path.read_text().splitlines():
            try:
                found.append(json.loads(line))
            except ValueError:
                continue  # a line cut short by a crash: that candidate runs again
        return found

    def add(self, record: dict) -> None:
        append_line(self.path, json.dumps(record, ensure_ascii=False), self.lock)


def funnel(records: list[dict]) -> dict:
    """Counts per stage, rejections by reason, per strategy and per source, source errors."""
    candidates = [r for r in records if r.get("kind") == "candidate"]
    stage = Counter()
    for r in candidates:
        reached = r.get("stage", "candidates")
        for name in STAGES[: STAGES.index(reached) + 1]:
            stage[name] += 1
    by_strategy: dict[str, Counter] = {}
    for r in candidates:
        c = by_strategy.setdefault(r["strategy"], Counter())
        c["candidates"] += 1
        c["drafts"] += r.get("stage") != "candidates"
        c["accepted"] += bool(r.get("accepted"))
    sources = [r for r in records if r.get("kind") == "source"]
    return {
        "stages": {name: stage[name] for name in STAGES},
        "rejected": dict(Counter(r["reason"] for r in candidates if r.get("reason")).most_common()),
        "strategies": {k: dict(v) for k, v in by_strategy.items()},
        "sources": [
            {k: s.get(k) for k in ("source", "revision", "status", "error", "tests", "seconds")}
            for s in sources
        ],
        "accepted": sorted(r["task"] for r in candidates if r.get("accepted")),
    }


def funnel_text(summary: dict) -> str:
    stages = summary["stages"]
    out = ["  " + " → ".join(f"{name} {stages[name]}" for name in STAGES)]
    for reason, n in summary["rejected"].items():
        out.append(f"  rejected {n:>5}  {reason}")
    for name, c in summary["strategies"].items():
        rate = c["accepted"] / c["drafts"] if c.get("drafts") else 0.0
        out.append(
            f"  {name}: {c['candidates']} candidates, {c['drafts']} drafts, "
            f"{c['accepted']} accepted ({rate:.0%} of drafts)"
        )
    for s in summary["sources"]:
        if s["status"] == "error":
            out.append(f"  source error: {s['error']}")
    return "\n".join(out)


def funnel_html(summary: dict, title: str) -> str:
    e = html.escape
    stages = summary["stages"]
    top = max(stages["candidates"], 1)
    bars = "".join(
        f"<tr><td>{e(name)}</td><td class=n>{stages[name]}</td><td><div class=bar "
        f"style='width:{400 * stages[name] / top:.0f}px'></div></td></tr>"
        for name in STAGES
    )
    reasons = "".join(
        f"<tr><td>{e(reason)}</td><td class=n>{n}</td></tr>"
        for reason, n in summary["rejected"].items()
    )
    sources = "".join(
        f"<tr><td>{e(str(s['source']))}</td><td>{e(str(s['revision'] or ''))}</td>"
        f"<td>{e(str(s['status']))}</td><td>{e(str(s['error'] or s.get('tests') or ''))}</td></tr>"
        for s in summary["sources"]
    )
    tasks = "".join(f"<li>{e(t)}</li>" for t in summary["accepted"])
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{e(title)}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:60em}}td{{padding:2px 8px}}
.n{{text-align:right}}.bar{{background:#4a7;height:12px}}</style></head><body>
<h1>{e(title)}</h1>
<h2>Funnel</h2><table>{bars}</table>
<h2>Rejected, by reason</h2><table>{reasons or "<tr><td>none</td></tr>"}</table>
<h2>Sources</h2><table><tr><th>source</th><th>revision</th><th>status</th><th></th></tr>
{sources}</table>
<h2>Accepted tasks ({len(summary["accepted"])})</h2><ul>{tasks}</ul>
</body></html>
"""
