"""Held-out success before and after training, IPA against token-level GRPO on the same budget.

    .venv/bin/python benchmarks/learning_curve.py [--seeds 3] [--steps 16] [--quick]
        [--train-families A,B] [--heldout-families C] [--sft-steps 1] [--sft-families A]
        [--sft-lr 5e-5] [--fail-reward -0.1] [--eval-size 8] [--json out.json]

Each (algorithm, seed) run starts from the same SmolLM2-135M-Instruct weights, gets the same SFT
warm-up, the same training tasks, steps, group size and token limits, and is evaluated on the
same held-out set: unseen instances of the trained families and a family never trained on.

The defaults are the frontier the target is about: the multi-turn families that need a look
before acting (`count-files`, `count-lines`; held out: `count-words`), which the untrained model
never solves and one SFT step brings to 5-50%. `make demo`'s families also include the one-step
`note-*` families, which one SFT step already solves (they measure nothing); pass
`--train-families` and `--heldout-families` to run those. `--fail-reward` is IPA's reward of a
failed episode for this benchmark (the library's default is the spec's -1; GRPO's normalised
advantages do not depend on it). Checkpoints are removed after each run; the metrics stay in
`--out`. Prints held-out success before RL (after the
SFT warm-up both algorithms share) and after as mean ± std over seeds, the gain, the untrained
model's success, the CPU minutes each run took (this process's user + system time), and whether
IPA met the target (>= 15 points gain within 30 CPU minutes, and more than GRPO's gain).

Each run is appended to `--json` as soon as it ends; running again with the same `--json` and
settings skips the runs already there, so an interrupted benchmark resumes where it stopped.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

from common import console, cpu_seconds, figures_table, headline, machine, mean_std, saved_runs

from rockroll.demo import DEMO_CONFIG, HELDOUT_FAMILIES, TRAIN_FAMILIES
from rockroll.train.config import IPASettings, parse_config
from rockroll.train.evaluation import EvalResult
from rockroll.train.trainer import Trainer

FRONTIER_TRAIN = "count-files,count-lines"
FRONTIER_HELDOUT = "count-words"
TARGET_GAIN = 0.15
TARGET_CPU_MINUTES = 30.0


def cpu_minutes() -> float:
    """This process's CPU time and its waited-for children's (the sandboxes' commands)."""
    return cpu_seconds(children=True) / 60


def settings(args: argparse.Namespace, algorithm: str) -> dict:
    """What makes two runs comparable; a saved run is reused only if these match."""
    keys = ("steps", "eval_size", "train_families", "heldout_families", "sft_steps", "sft_lr")
    mine = {k: getattr(args, k) for k in keys}
    mine["sft_families"] = args.sft_families or args.train_families
    if algorithm == "ipa":
        mine["fail_reward"] = args.fail_reward
    return mine


def one_run(algorithm: str, seed: int, args: argparse.Namespace) -> dict:
    train, heldout = args.train_families, args.heldout_families
    sft_families = args.sft_families or train
    variant = f"-fail{args.fail_reward:g}" if algorithm == "ipa" else ""
    cfg = parse_config(
        DEMO_CONFIG
        | {
            "algorithm": algorithm,
            "seed": seed,
            "steps": args.steps,
            "out": str(Path(args.out) / f"{algorithm}{variant}-seed{seed}"),
            "tasks": f"term:{train}?seed=0&size=24",
            "eval_tasks": f"term:{train},{heldout}?seed=1000&size={args.eval_size}",
            "sft": DEMO_CONFIG["sft"]
            | {
                "steps": args.sft_steps,
                "lr": args.sft_lr,
                "tasks": f"term:{sft_families}?seed=0&size=24",
            },
            "ipa": {"fail_reward": args.fail_reward},
            "tensorboard": False,
        },
        "learning-curve config",
    )
    cpu0, wall0 = cpu_minutes(), time.monotonic()
    evals = Trainer(cfg, log=lambda line: console.print(f"[dim]{line}[/dim]")).run()
    shutil.rmtree(Path(cfg.out) / "checkpoints", ignore_errors=True)  # ~1 GB each, not needed
    # "Before" is the warmed-up policy both algorithms start from (the untrained one if no SFT).
    before = next((e for e in evals if e.label == "after SFT"), evals[0])
    after = evals[-1]
    return {
        "algorithm": algorithm,
        "seed": seed,
        "untrained": evals[0].success,
        "before": before.success,
        "after": after.success,
        "unseen_before": _share(before, heldout),
        "unseen_after": _share(after, heldout),
        "cpu_minutes": cpu_minutes() - cpu0,
        "wall_minutes": (time.monotonic() - wall0) / 60,
        "per_family": {"before": before.per_family, "after": after.per_family},
        "settings": settings(args, algorithm),
    }


def _share(result: EvalResult, families: str) -> float:
    passed = total = 0
    for fam in families.split(","):
        p, t = result.per_family.get(fam, (0, 0))
        passed, total = passed + p, total + t
    return passed / total if total else 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--eval-size", type=int, default=8, help="instances per family")
    parser.add_argument("--algorithms", default="ipa,grpo")
    parser.add_argument(
        "--train-families", default=FRONTIER_TRAIN, help=f"`make demo`'s: {TRAIN_FAMILIES}"
    )
    parser.add_argument(
        "--heldout-families",
        default=FRONTIER_HELDOUT,
        help=f"never trained on; `make demo`'s: {HELDOUT_FAMILIES}",
    )
    parser.add_argument("--sft-steps", type=int, default=1)
    parser.add_argument("--sft-lr", type=float, default=float(DEMO_CONFIG["sft"]["lr"]))
    parser.add_argument(
        "--sft-families", help="families of the SFT warm-up (default: the trained ones)"
    )
    parser.add_argument(
        "--fail-reward",
        type=float,
        default=-0.1,
        help=f"IPA's reward of a failed episode (library default {IPASettings().fail_reward:g})",
    )
    parser.add_argument("--out", default="runs/learning-curve")
    parser.add_argument("--quick", action="store_true", help="1 seed, 2 steps, 2 per family")
    parser.add_argument("--json", help="also write the runs here")
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.steps, args.eval_size = 1, 2, 2
    console.print(headline("rockroll learning curve", machine()))
    console.print(
        f"training on {args.train_families}; held out: unseen instances of those and the "
        f"families {args.heldout_families}; {args.sft_steps} SFT steps, {args.steps} RL steps, "
        f"{args.eval_size} held-out tasks per family"
    )
    saved = saved_runs(args.json)
    runs = []
    for seed in range(args.seeds):
        for algorithm in args.algorithms.split(","):
            done = [
                r
                for r in saved
                if (r["algorithm"], r["seed"]) == (algorithm, seed)
                and r.get("settings") == settings(args, algorithm)
            ]
            console.print(
                f"[bold]{algorithm}, seed {seed}[/bold]: {args.steps} steps"
                + (f" (saved in {args.json})" if done else "")
            )
            runs.append(done[0] if done else one_run(algorithm, seed, args))
            if args.json and not done:
                saved.append(runs[-1])
                Path(args.json).write_text(json.dumps(saved, indent=1))
            r = runs[-1]
            console.print(
                f"  held-out {r['before']:.0%} -> {r['after']:.0%} (unseen families "
                f"{r['unseen_before']:.0%} -> {r['unseen_after']:.0%}), "
                f"{r['cpu_minutes']:.1f} CPU min, {r['wall_minutes']:.1f} min"
            )
    rows = []
    gains = {}
    for algorithm in args.algorithms.split(","):
        mine = [r for r in runs if r["algorithm"] == algorithm]
        gain = [r["after"] - r["before"] for r in mine]
        gains[algorithm] = statistics.mean(gain)
        cpu = max(r["cpu_minutes"] for r in mine)
        ok = None
        if algorithm == "ipa":
            ok = gains["ipa"] >= TARGET_GAIN and cpu <= TARGET_CPU_MINUTES
        rows.append(
            (
                f"{algorithm}: held-out before -> after",
                f"{mean_std([r['before'] for r in mine])} -> "
                f"{mean_std([r['after'] for r in mine])}",
                "+15 points" if algorithm == "ipa" else "",
                ok,
                f"gain {mean_std(gain)}; untrained model "
                f"{mean_std([r['untrained'] for r in mine])}; unseen families "
                f"{mean_std([r['unseen_before'] for r in mine])} -> "
                f"{mean_std([r['unseen_after'] for r in mine])}; max {cpu:.1f} CPU min",
            )
        )
    if "ipa" in gains and len(gains) > 1:
        best_other = max(g for a, g in gains.items() if a != "ipa")
        rows.append(
            (
                "IPA gain - best other gain",
                f"{gains['ipa'] - best_other:+.0%}",
                "> 0",
                gains["ipa"] > best_other,
                f"{len(runs)} runs, {args.steps} steps each",
            )
        )
    console.print(figures_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
