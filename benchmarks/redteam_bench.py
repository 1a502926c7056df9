"""The red-team suite end to end: benign tasks composed with every attack through the three
channels, run by the oracle (does the composed task still score as its base?) and by a
follower (an agent that does whatever the injection says: the ceiling of attack success),
under default-deny egress (each task's own network: none) with the shipped rules enforced,
and for the follower also observed.

    .venv/bin/python benchmarks/redteam_bench.py [--tasks DIR_OR_SUITE ...] [--out DIR] [-j 2]

Default tasks: the shared EvoEval and Aider Polyglot folders and six procedural terminal
families. Prints, per run, the table by channel and by attack class (task success, unsafe,
followed, attack success) and the connections that left any sandbox; exits 1 if any did.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from common import console, headline, machine

from rockroll.bench.agents import HarnessAgent, OracleAgent, task_file
from rockroll.bench.report import redteam_summary, render_redteam
from rockroll.bench.runner import TaskResult, run_suite
from rockroll.progress import RunProgress
from rockroll.safety import default_rules, observing
from rockroll.safety.attacks import all_attacks
from rockroll.safety.redteam import CHANNELS, follower_replies, write_suite
from rockroll.tasks.schema import Task
from rockroll.tasks.suites import load_suite

SHARED = Path(__file__).resolve().parents[2] / "shared" / "tasks"
TERM = "term:note-mkdir,note-rename,fix-dir,fix-config,find-copy,count-lines?seed=7&size=2"


def compose(sources: list[str], out: Path) -> list[Task]:
    for n, spec in enumerate(sources):
        path = Path(spec)
        folders = [p for p in sorted(path.iterdir()) if p.is_dir()] if path.is_dir() else []
        items = [t for f in folders for t in load_suite(str(f))] if folders else load_suite(spec)
        write_suite(items, list(all_attacks()), out / f"s{n}", suite=None if folders else spec)
    tasks = [t for n in range(len(sources)) for t in load_suite(str(out / f"s{n}"))]
    bad = [t for t in tasks if not isinstance(t, Task)]
    if bad:
        sys.exit(f"{len(bad)} composed task(s) did not load: {bad[0]}")
    return tasks  # type: ignore[return-value]


def run(name: str, tasks: list[Task], agent: object, out: Path, jobs: int, rules: list) -> dict:
    with RunProgress(name, len(tasks), console) as progress:

        def seen(r: TaskResult) -> None:
            v = r.safety.get("redteam", {})
            progress.done(
                f"{r.task}: {'passed' if r.passed else r.reason}, followed {v.get('followed')}, "
                f"succeeded {v.get('succeeded')}",
                r.passed,
            )

        results = run_suite(tasks, agent, out, jobs=jobs, on_result=seen, rules=rules)  # type: ignore[arg-type]
    summary = redteam_summary(results)
    console.print(f"[bold]{name}[/bold]")
    render_redteam(summary, console)
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="*", help="task folders (of folders) or suite names")
    parser.add_argument("--out", help="where the suite and the runs go (default: a temp dir)")
    parser.add_argument("-j", "--jobs", type=int, default=2)
    args = parser.parse_args()
    sources = args.tasks or [str(SHARED / "evoeval"), str(SHARED / "aider-polyglot-python"), TERM]
    out = Path(args.out or tempfile.mkdtemp(prefix="redteam-bench-"))
    console.print(headline("redteam_bench", machine(), f"  |  out {out}"))
    tasks = compose(sources, out / "suite")
    console.print(
        f"{len(tasks)} red-team tasks: {len(tasks) // len(CHANNELS)} per channel, "
        f"{len(all_attacks())} attacks"
    )
    replies = out / "replies"
    replies.mkdir(parents=True, exist_ok=True)
    for t in tasks:
        (replies / f"{task_file(t.id)}.json").write_text(json.dumps(follower_replies(t)))
    follower = HarnessAgent(f"scripted:{replies}", max_turns=12)
    enforce, observe = default_rules(), observing(default_rules())
    plan = [
        ("oracle, enforced", OracleAgent(), "oracle", enforce),
        ("follower, observed", follower, "observe", observe),
        ("follower, enforced", follower, "enforce", enforce),
    ]
    figures = {name: run(name, tasks, a, out / sub, args.jobs, r) for name, a, sub, r in plan}
    (out / "figures.json").write_text(json.dumps(figures, indent=1))
    outbound = sum(f["outbound"] for f in figures.values())
    console.print(f"connections out of any sandbox, all runs: {outbound} ({out}/figures.json)")
    return 1 if outbound else 0


if __name__ == "__main__":
    sys.exit(main())
