"""`make demo`: the whole loop, short and real, on this machine's CPU.

`rockroll demo` evaluates SmolLM2-135M-Instruct on held-out multi-turn terminal tasks, warms it
up on verified expert trajectories, trains it with IPA on other instances and families of the
same kinds, evaluates again and prints the before/after table. `rockroll demo --tour` is a
short tour of the sandbox runtime instead.
"""

from __future__ import annotations

import statistics
import time

from rich.console import Console
from rich.table import Table

from rockroll.sandbox.sdk import Sandbox

# Families of each kind: the trained ones, and one per kind never seen in training.
TRAIN_FAMILIES = "note-mkdir,note-rename,count-lines,count-files"
HELDOUT_FAMILIES = "note-touch,count-words"

DEMO_CONFIG: dict = {
    "model": "local:smollm2",
    "tasks": f"term:{TRAIN_FAMILIES}?seed=0&size=24",
    "eval_tasks": f"term:{TRAIN_FAMILIES},{HELDOUT_FAMILIES}?seed=1000&size=4",
    "algorithm": "ipa",
    "steps": 6,
    "lr": 2e-5,
    "rollout": {
        "group_size": 4,
        "tasks_per_step": 2,
        "max_turns": 3,
        "max_tokens_per_turn": 40,
        "temperature": 1.0,
        "workers": 8,
    },
    "sft": {"steps": 2, "lr": 5e-5, "batch_size": 8},
    "checkpoint_every": 3,
}


def run_pipeline(
    console: Console, *, out: str | None = None, steps: int | None = None, **changes: object
) -> int:
    """Evaluate, warm up, train with IPA, evaluate again; print the before/after table.

    `changes` replace top-level settings of DEMO_CONFIG (tests use a tiny model)."""
    from rockroll.train.config import parse_config
    from rockroll.train.report import print_evals, progress_printer
    from rockroll.train.trainer import Trainer

    out = out or time.strftime("runs/demo-%Y%m%d-%H%M%S")
    overrides = {k: v for k, v in (("out", out), ("steps", steps)) if v is not None}
    cfg = parse_config(DEMO_CONFIG | changes | overrides, "demo config")
    console.rule("rockroll demo: evaluate, train with IPA, evaluate again")
    console.print(
        f"policy {cfg.model}; training on {TRAIN_FAMILIES}; held out: unseen instances of "
        f"those and the unseen families {HELDOUT_FAMILIES}; config in {cfg.out}/config.json"
    )
    started = time.perf_counter()
    trainer = Trainer(cfg, log=lambda line: console.print(line, highlight=False))
    with progress_printer(console, cfg) as on_step:
        evals = trainer.run(on_step=on_step)
    print_evals(console, evals)
    minutes = (time.perf_counter() - started) / 60
    console.print(f"done in {minutes:.1f} min; metrics in {cfg.out}/metrics.jsonl")
    return 0


def run_tour(console: Console) -> int:
    console.rule("rockroll sandbox demo")
    t0 = time.perf_counter()
    with Sandbox.create(memory="512m", cpus=1, pids=256, workdir="/work") as sb:
        created = time.perf_counter() - t0
        console.print(
            f"created sandbox [bold]{sb.id}[/] in {created * 1000:.1f} ms "
            "(the first one in a process also collects leftovers and warms up)"
        )
        table = Table("command", "exit", "output")
        for cmd in (
            "hostname; id -u",
            "ps -e --no-headers | wc -l",
            "python3 -c 'import sys; print(sys.version.split()[0])'",
            "curl -sS -m 2 http://deb.debian.org >/dev/null 2>&1 || echo 'network: none'",
            "grep CapEff /proc/self/status",
        ):
            res = sb.exec(cmd, timeout=30)
            table.add_row(cmd, str(res.exit_code), res.output.strip())
        console.print(table)

        session = sb.session()
        session.run("cd /tmp && export GREETING=hello")
        res = session.run('echo "$GREETING from $(pwd)"')
        console.print(f"persistent session: {res.stdout.strip()}")
        session.close()

        res = sb.exec("sleep 30", timeout=0.5)
        console.print(f"timeout: killed after {res.duration:.2f} s (timed_out={res.timed_out})")

        sb.write_text("state.txt", "written before the snapshot\n")
        t1 = time.perf_counter()
        with sb.fork() as child:
            forked = time.perf_counter() - t1
            child.write_text("state.txt", "changed in the fork\n")
            console.print(
                f"fork in {forked * 1000:.1f} ms: parent sees {sb.read_text('state.txt')!r}"
            )
            console.print(f"                      fork sees {child.read_text('state.txt')!r}")
        console.print(f"audit log: {len(sb.audit_log())} commands recorded")
        console.print(f"20 more sandboxes, create→first exec median: {_typical_start():.1f} ms")
    console.print("[green]sandbox closed; nothing left behind[/]")
    return 0


def _typical_start(count: int = 20) -> float:
    """Median milliseconds from `Sandbox.create()` to the end of a first command."""
    times = []
    for _ in range(count):
        t0 = time.perf_counter()
        with Sandbox.create() as sb:
            sb.exec("true")
            times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)
