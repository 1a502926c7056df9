"""Start-state success before and after training, with and without chunk-level initialized
resampling, on tasks the policy never solves from the start; and fork against replay.

    .venv/bin/python benchmarks/resampling.py [--seeds 3] [--steps 8] [--eval-size 8]
        [--families count-files,count-lines] [--quick] [--json out.json]

Each (condition, seed) run starts from the same untrained SmolLM2-135M-Instruct weights (no SFT:
the untrained model solves these look-then-write families 0% of the time from the start), gets
the same tasks, steps, group size and token limits, and is evaluated greedily from the task's
start on unseen instances of the same families. `plain` samples every episode from the start;
`resampled` spreads a hard task's group over anchors on the tasks' oracle trajectories
(parallel initialization, fork-based), with eq. 10's imitation fallback at stuck crucial forks.

Then the initialization itself is timed: the sandbox and context at expert turn k made by forking
a snapshot recorded while replaying the expert once, against replaying the expert's first k
commands in a fresh sandbox (median of `--init-repeats` per task and turn).

Each run is appended to `--json` as soon as it ends; running again with the same `--json` and
settings skips the runs already there.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

from common import console, figures_table, headline, machine, mean_std, saved_runs
from learning_curve import cpu_minutes

from rockroll.agent.loop import AgentLoop
from rockroll.demo import DEMO_CONFIG
from rockroll.models.local import load_local
from rockroll.tasks.suites import load_suite
from rockroll.tasks.workspace import open_sandbox, task_image
from rockroll.train.config import RolloutConfig, parse_config
from rockroll.train.episodes import agent_config
from rockroll.train.expert import ExpertStates, ForcedModel, oracle_expert
from rockroll.train.trainer import Trainer

FAMILIES = "count-files,count-lines"
CONDITIONS = ("plain", "resampled")


def settings(args: argparse.Namespace) -> dict:
    keys = ("steps", "eval_size", "families", "fail_reward", "group_size", "il_coef")
    return {k: getattr(args, k) for k in keys}


def one_run(condition: str, seed: int, args: argparse.Namespace) -> dict:
    resample = {"enabled": condition == "resampled", "il_coef": args.il_coef, "window": 4}
    cfg = parse_config(
        DEMO_CONFIG
        | {
            "seed": seed,
            "steps": args.steps,
            "out": str(Path(args.out) / f"{condition}-seed{seed}"),
            "tasks": f"term:{args.families}?seed=0&size=24",
            "eval_tasks": f"term:{args.families}?seed=1000&size={args.eval_size}",
            "rollout": DEMO_CONFIG["rollout"] | {"group_size": args.group_size},
            "sft": {"steps": 0},
            "ipa": {"fail_reward": args.fail_reward},
            "resample": resample,
            "checkpoint_every": args.steps,
            "tensorboard": False,
        },
        "resampling config",
    )
    cpu0, wall0 = cpu_minutes(), time.monotonic()
    evals = Trainer(cfg, log=lambda line: console.print(f"[dim]{line}[/dim]")).run()
    shutil.rmtree(Path(cfg.out) / "checkpoints", ignore_errors=True)
    steps = [json.loads(line) for line in (Path(cfg.out) / "metrics.jsonl").open()]
    steps = [m for m in steps if "step" in m]
    return {
        "condition": condition,
        "seed": seed,
        "before": evals[0].success,
        "after": evals[-1].success,
        "successes": sum(round(m["success"] * (m["episodes"] - m["dropped"])) for m in steps),
        "il_steps": sum(1 for m in steps if m.get("il_sequences")),
        "cpu_minutes": cpu_minutes() - cpu0,
        "wall_minutes": (time.monotonic() - wall0) / 60,
        "settings": settings(args),
    }


def init_times(families: str, repeats: int) -> list[tuple[str, int, float, float]]:
    """(family, turn k, fork ms, replay ms): the median time to reach expert turn k."""
    policy = load_local("smollm2")
    cfg = RolloutConfig()
    out = []
    for fam in families.split(","):
        [task] = load_suite(f"term:{fam}?seed=7&size=1")
        expert = oracle_expert(task)
        agent_cfg = agent_config(cfg, max_turns=expert.turns)
        states = ExpertStates.record(policy, task, expert, agent_cfg)
        try:
            for k in sorted(states.snapshots):
                fork = _median(repeats, _fork, states, k, policy)
                replay = _median(repeats, _replay, policy, task, expert, k, agent_cfg)
                out.append((fam, k, fork, replay))
        finally:
            states.close()
    return out


def _fork(states: ExpertStates, k: int, policy) -> None:  # type: ignore[no-untyped-def]
    sandbox, _ = states.resume(k, policy)
    sandbox.close()


def _replay(policy, task, expert, k: int, agent_cfg) -> None:  # type: ignore[no-untyped-def]
    model = ForcedModel(policy, expert.replies[:k], forced=True)
    with open_sandbox(task, task_image(task)) as sandbox:
        loop = AgentLoop(model, config=replace(agent_cfg, max_turns=k))  # type: ignore[arg-type]
        loop.run(task.instruction, sandbox)


def _median(repeats: int, work, *args) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        work(*args)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--eval-size", type=int, default=8, help="instances per family")
    parser.add_argument("--families", default=FAMILIES)
    parser.add_argument("--fail-reward", type=float, default=-0.1)
    parser.add_argument("--group-size", type=int, default=4, help="episodes per task and step")
    parser.add_argument("--il-coef", type=float, default=1.0, help="lambda_IL of eq. 10")
    parser.add_argument("--init-repeats", type=int, default=9)
    parser.add_argument("--conditions", default=",".join(CONDITIONS), help="plain,resampled")
    parser.add_argument("--out", default="runs/resampling")
    parser.add_argument("--quick", action="store_true", help="1 seed, 2 steps, 2 per family")
    parser.add_argument("--skip-training", action="store_true", help="only time fork/replay")
    parser.add_argument("--json", help="also write the runs here")
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.steps, args.eval_size, args.init_repeats = 1, 2, 2, 3
    console.print(headline("rockroll resampling", machine()))
    rows: list[tuple[str, str, str, bool | None, str]] = []
    for fam, k, fork, replay in init_times(args.families, args.init_repeats):
        rows.append(
            (
                f"start at {fam} expert turn {k}",
                f"fork {fork:.0f} ms, replay {replay:.0f} ms",
                "fork < replay",
                fork < replay,
                f"{replay / fork:.1f}x",
            )
        )
    console.print(figures_table(rows))
    if args.skip_training:
        return 0
    console.print(
        f"training on {args.families} from the untrained model, {args.steps} IPA steps, "
        f"start-state success on {args.eval_size} unseen instances per family"
    )
    saved = saved_runs(args.json)
    runs = []
    for seed in range(args.seeds):
        for condition in args.conditions.split(","):
            done = [
                r
                for r in saved
                if (r["condition"], r["seed"]) == (condition, seed)
                and r["settings"] == settings(args)
            ]
            console.print(f"[bold]{condition}, seed {seed}[/bold]" + (" (saved)" if done else ""))
            runs.append(done[0] if done else one_run(condition, seed, args))
            if args.json and not done:
                saved.append(runs[-1])
                Path(args.json).write_text(json.dumps(saved, indent=1))
            r = runs[-1]
            console.print(
                f"  start-state success {r['before']:.0%} -> {r['after']:.0%}; "
                f"{r['successes']} successful training episodes; {r['il_steps']} steps with "
                f"imitation; {r['cpu_minutes']:.1f} CPU min"
            )
    rows = []
    for condition in args.conditions.split(","):
        mine = [r for r in runs if r["condition"] == condition]
        rows.append(
            (
                f"{condition}: start-state success before -> after",
                f"{mean_std([r['before'] for r in mine])} -> "
                f"{mean_std([r['after'] for r in mine])}",
                "rises" if condition == "resampled" else "",
                statistics.mean(r["after"] - r["before"] for r in mine) > 0
                if condition == "resampled"
                else None,
                f"training successes {statistics.mean(r['successes'] for r in mine):.1f} per run; "
                f"max {max(r['cpu_minutes'] for r in mine):.1f} CPU min",
            )
        )
    console.print(figures_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
