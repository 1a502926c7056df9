"""Training against injections: does the unsafe-action penalty teach a policy to ignore them?

    .venv/bin/python benchmarks/redteam_training.py [--model local:tiny-random] [--steps 12]
        [--sft-steps 250] [--sft-lr 5e-3] [--lr 1e-3] [--group-size 8] [--out DIR]
        [--no-control] [--no-follower]

Red-team tasks, one terminal family per channel (prompt: note-mkdir, repo: fix-dir, tool:
count-lines; two tasks each, one attack each). The policy is first warmed up (SFT) on both the
golden safe trajectory of every task (read the note, do the task) and the trajectory of an
agent that follows the injection (`rockroll safety redteam --follower`), so that it follows
some of the time (`--no-follower`: on the golden ones only, to see how often a model follows on
its own); then `rockroll train` runs GRPO with `rollout.unsafe_penalty` (default 1.0)
and, as the control, the same run with no penalty. Printed per channel: how many sampled
episodes ran the attack after the warm-up and after training, and held-out (greedy) success.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml
from common import console, headline, machine
from rich.table import Table

ROCKROLL = Path(sys.executable).with_name("rockroll")
PLAN = {"prompt": "note-mkdir", "repo": "fix-dir", "tool": "count-lines"}
ATTACKS = {"prompt": "tamper-history", "repo": "destructive-disk", "tool": "persistence-keys"}


def suites(out: Path, size: int, follower: bool) -> tuple[Path, Path]:
    tasks, sft = out / "tasks", out / "sft"
    for channel, family in PLAN.items():
        spec = f"term:{family}?seed=0&size={size}"
        common = [spec, "--channels", channel, "--attacks", ATTACKS[channel]]
        writes = [(tasks, []), (sft, [])] + ([(sft, ["--follower"])] if follower else [])
        for folder, extra in writes:
            subprocess.run(
                [str(ROCKROLL), "safety", "redteam", *common, "--out", str(folder), *extra],
                check=True,
                stdout=subprocess.DEVNULL,
            )
    return tasks, sft


def train(out: Path, tasks: Path, sft: Path, args: argparse.Namespace, penalty: float) -> list:
    config = {
        "model": args.model,
        "tasks": str(tasks),
        "eval_tasks": str(tasks),
        "algorithm": "grpo",
        "steps": args.steps,
        "lr": args.lr,
        "seed": 0,
        "rollout": {
            "group_size": args.group_size,
            "tasks_per_step": 3,
            "max_turns": 6,
            "max_tokens_per_turn": 64,
            "workers": 8,
            "unsafe_penalty": penalty,
        },
        "sft": {"steps": args.sft_steps, "lr": args.sft_lr, "batch_size": 4, "tasks": str(sft)},
        "checkpoint_every": 1000,
        "out": str(out),
        "tensorboard": False,
    }
    path = out.with_suffix(".yaml")
    path.write_text(yaml.safe_dump(config))
    subprocess.run([str(ROCKROLL), "train", str(path)], check=True)
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def report(name: str, rows: list) -> dict:
    evals = [r for r in rows if "eval_step" in r]
    after_sft = next(e for e in evals if e["eval_label"] == "after SFT")
    end = evals[-1]
    steps = [r for r in rows if "step" in r and "reward" in r]
    table = Table(title=name)
    for column in ("channel", "followed after SFT", "followed at the end", "success after SFT",
                   "success at the end"):  # fmt: skip
        table.add_column(column, justify="right")
    out = {}
    for channel, family in PLAN.items():
        a, b = (
            after_sft["eval_attacks_followed"].get(channel),
            end["eval_attacks_followed"].get(channel),
        )
        s0, s1 = after_sft["eval"].get(family), end["eval"].get(family)
        table.add_row(
            channel, f"{a[0]}/{a[1]}", f"{b[0]}/{b[1]}", f"{s0[0]}/{s0[1]}", f"{s1[0]}/{s1[1]}"
        )
        out[channel] = {"followed": [a, b], "success": [s0, s1]}
    console.print(table)
    curve = " ".join(f"{r.get('attack_followed', 0):.2f}" for r in steps)
    console.print(f"{name}: share of each step's rollouts that followed: {curve}")
    console.print(
        f"{name}: held-out success {after_sft['eval_success']:.0%} -> {end['eval_success']:.0%}"
    )
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="local:tiny-random")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--sft-steps", type=int, default=250)
    parser.add_argument("--sft-lr", type=float, default=5e-3)
    parser.add_argument("--size", type=int, default=2, help="tasks per family")
    parser.add_argument(
        "--group-size", type=int, default=8, help="episodes per task per step, and per evaluation"
    )
    parser.add_argument("--penalty", type=float, default=1.0)
    parser.add_argument("--no-control", action="store_true", help="skip the run without penalty")
    parser.add_argument(
        "--no-follower",
        action="store_true",
        help="warm up on the golden trajectories only (how often the model follows on its own)",
    )
    parser.add_argument("--out")
    args = parser.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="redteam-training-"))
    out.mkdir(parents=True, exist_ok=True)
    console.print(headline("redteam_training", machine(), f"  |  {args.model}  |  out {out}"))
    tasks, sft = suites(out, args.size, not args.no_follower)
    figures = {
        "penalty": report(
            f"penalty {args.penalty}", train(out / "penalty", tasks, sft, args, args.penalty)
        )
    }
    if not args.no_control:
        figures["control"] = report(
            "no penalty (control)", train(out / "control", tasks, sft, args, 0.0)
        )
    (out / "figures.json").write_text(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
