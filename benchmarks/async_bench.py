"""Training steps per hour with synchronous and asynchronous rollouts, on long-tailed episodes.

    .venv/bin/python benchmarks/async_bench.py [--steps 20] [--rounds 1]
        [--model local:tiny-random] [--max-staleness 2] [--stale drop] [--json out.json]

Both runs train the same model on the same `fix-slow` tasks (a test script whose run time is
Pareto-distributed per instance; the verifier runs it, so every episode pays it whatever the
policy does), with the same steps, group size, tasks per step, token limits and concurrency
(`rollout.workers` episodes at once in the synchronous run, by default all of a step's;
`max_in_flight` as many in the asynchronous one). A synchronous step waits for its slowest
episode; an asynchronous step takes the first groups to finish while the rest keep running.

Prints steps per hour of each and their ratio (target: asynchronous >= 1.5x), the time of the
tasks' scripts and the episode lengths trained on (median, p90, max: the long tail), the
staleness of the episodes the asynchronous steps trained on, and the share it dropped as too
stale.
A run's steps/hour counts the steps after its first (which pays the one-off warm-up of
decoding and of the update), over the time from the end of the first step to the end of the
last. `--rounds N` alternates N synchronous and N asynchronous runs and pools them, so a
change in the machine's load during the benchmark weighs on both modes alike.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

from common import console, figures_table, headline, machine, pct

from rockroll.train.config import parse_config
from rockroll.train.episodes import Episode
from rockroll.train.trainer import Trainer

TARGET_RATIO = 1.5


def script_seconds(episode: Episode) -> float:
    """How long the task's run.sh works before it checks anything (its `sleep`)."""
    found = re.search(r"sleep ([0-9.]+)", str(episode.task.files.get("/app/run.sh", "")))
    return float(found.group(1)) if found else 0.0


def config(args: argparse.Namespace, asynchronous: bool) -> dict:
    """A run's settings: only `rollout.mode` differs between the two modes."""
    return {
        "model": args.model,
        "tasks": f"term:fix-slow?seed=0&size={args.tasks}",
        "steps": args.steps,
        "lr": 1e-4,
        "seed": args.seed,
        "rollout": {
            "group_size": args.group_size,
            "tasks_per_step": args.tasks_per_step,
            "max_turns": 2,
            "max_tokens_per_turn": args.max_tokens,
            "workers": args.workers,
            "mode": "async" if asynchronous else "sync",
        },
        "asynchronous": {
            "max_staleness": args.max_staleness,
            "stale": args.stale,
            "max_in_flight": args.workers,
        },
        "checkpoint_every": args.steps,
        "tensorboard": False,
        "out": str(Path(args.out) / ("async" if asynchronous else "sync")),
    }


def one_run(args: argparse.Namespace, asynchronous: bool) -> dict:
    cfg = parse_config(config(args, asynchronous), "async-bench config")
    shutil.rmtree(cfg.out, ignore_errors=True)
    trainer = Trainer(cfg, log=lambda line: console.print(f"[dim]{line}[/dim]"))
    steps: list[dict] = []
    ends: list[float] = []
    lengths: list[float] = []  # every episode the steps trained on: its wall time,
    work: list[float] = []  # and the time its task's script takes (what makes the long tail)

    def on_step(metrics: dict) -> None:
        steps.append(metrics)
        ends.append(time.monotonic())
        assert trainer.last is not None  # what the rollouts handed this step
        done = [e for e in trainer.last.episodes if e.trajectory is not None]
        lengths.extend(e.seconds for e in done)
        work.extend(script_seconds(e) for e in done)

    trainer.run(on_step=on_step)
    shutil.rmtree(Path(cfg.out) / "checkpoints", ignore_errors=True)
    return {
        "mode": "async" if asynchronous else "sync",
        "timed_steps": len(steps) - 1,
        "wall_s": ends[-1] - ends[0],
        "lengths": lengths,
        "work": work,
        "metrics": steps,
    }


def pooled(runs: list[dict]) -> dict:
    """The runs of one mode as one: steps/hour over all timed steps and their time."""
    steps, wall = sum(r["timed_steps"] for r in runs), sum(r["wall_s"] for r in runs)
    return {
        "timed_steps": steps,
        "wall_s": wall,
        "steps_per_hour": steps / wall * 3600,
        "lengths": [x for r in runs for x in r["lengths"]],
        "work": [x for r in runs for x in r["work"]],
        "metrics": [m for r in runs for m in r["metrics"]],
        "timed": [m for r in runs for m in r["metrics"][1:]],
    }


def staleness(run: dict) -> tuple[Counter[int], int, int]:
    """Episodes trained on by staleness, episodes dropped as too stale, episodes trained on."""
    counts: Counter[int] = Counter()
    for m in run["metrics"]:
        counts.update({int(k): v for k, v in m.get("staleness_counts", {}).items()})
    dropped = sum(m.get("stale_dropped", 0) for m in run["metrics"])
    used = sum(m["episodes"] - m["dropped"] for m in run["metrics"])
    return counts, dropped, used


def _spread(name: str, values: list[float]) -> tuple[str, str, str, None, str]:
    """A row of seconds: median / p90 / max, and how much longer the longest is."""
    median = pct(values, 50)
    return (
        name,
        f"{median:.1f} / {pct(values, 90):.1f} / {max(values):.1f} s",
        "",
        None,
        f"{len(values)} trained episodes; max / median {max(values) / median:.1f}x",
    )


def report(sync: dict, asyn: dict, args: argparse.Namespace) -> None:
    ratio = asyn["steps_per_hour"] / sync["steps_per_hour"]
    counts, dropped, used = staleness(asyn)
    spread = ", ".join(f"{k}: {v}" for k, v in sorted(counts.items()))
    trained = [k for k, v in counts.items() for _ in range(v)] or [0]
    rows = [
        ("synchronous steps/hour", f"{sync['steps_per_hour']:,.0f}", "", None, _run_note(sync)),
        ("asynchronous steps/hour", f"{asyn['steps_per_hour']:,.0f}", "", None, _run_note(asyn)),
        ("async / sync", f"{ratio:.2f}x", f">= {TARGET_RATIO}x", ratio >= TARGET_RATIO, ""),
        _spread("run.sh time, p50 / p90 / max (sync)", sync["work"]),
        _spread("episode length, p50 / p90 / max (sync)", sync["lengths"]),
        _spread("episode length, p50 / p90 / max (async)", asyn["lengths"]),
        (
            "staleness of trained episodes: mean / max",
            f"{statistics.mean(trained):.2f} / {max(trained)}",
            f"<= {args.max_staleness}",
            args.stale == "keep" or max(trained) <= args.max_staleness,
            f"versions behind -> episodes: {spread}",
        ),
        (
            "dropped as too stale",
            f"{dropped / max(dropped + used, 1):.1%}",
            "",
            None,
            f"{dropped} of {dropped + used} finished episodes (stale: {args.stale})",
        ),
    ]
    console.print(figures_table(rows))


def _run_note(run: dict) -> str:
    waits = [m["rollout_seconds"] for m in run["timed"]]
    updates = [m["train_seconds"] for m in run["timed"]]
    return (
        f"{run['timed_steps']} timed steps in {run['wall_s']:.0f} s; per step: episodes waited "
        f"{statistics.mean(waits):.2f} s, update {statistics.mean(updates):.2f} s"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="per run, at least 2")
    parser.add_argument("--rounds", type=int, default=1, help="sync and async runs each")
    parser.add_argument("--model", default="local:tiny-random", help="or local:smollm2")
    parser.add_argument("--tasks", type=int, default=64, help="fix-slow instances")
    parser.add_argument("--group-size", type=int, default=4)
    parser.add_argument("--tasks-per-step", type=int, default=4)
    parser.add_argument("--workers", type=int, default=16, help="episodes at once, both modes")
    parser.add_argument("--max-tokens", type=int, default=16, help="per model turn")
    parser.add_argument("--max-staleness", type=int, default=2)
    parser.add_argument("--stale", choices=["drop", "keep"], default="drop")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/async-bench")
    parser.add_argument("--json", help="also write both runs here")
    args = parser.parse_args()
    if args.steps < 2:
        parser.error("--steps must be at least 2: the first step is not timed")
    console.print(headline("rockroll async rollouts", machine()))
    console.print(
        f"{args.model} on term:fix-slow, {args.steps} steps of {args.tasks_per_step} tasks x "
        f"{args.group_size} episodes, {args.workers} episodes at once; async: k = "
        f"{args.max_staleness}, stale: {args.stale}"
    )
    runs = []
    for round_ in range(args.rounds):
        for asynchronous in (False, True):
            mode = "asynchronous" if asynchronous else "synchronous"
            console.print(f"[bold]{mode}[/bold], round {round_ + 1} of {args.rounds}")
            runs.append(one_run(args, asynchronous))
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "runs": runs}, indent=1))
    report(pooled(runs[0::2]), pooled(runs[1::2]), args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
