"""The monitor on a labelled set (precision and recall per class, false positives per benign
trajectory), and its cost: per exec, per connection, per rule check, on a sandbox's start.

    .venv/bin/python benchmarks/safety_bench.py [--n 2000] [--starts 60] [--only-cost]

Each sample of `rockroll.safety.labelled` runs in a fresh fork of one sandbox (the shipped rules,
stand-ins for the programs the image lacks), step by step; it is flagged with every class of
the rules its events matched. Recall of a class: its samples flagged with it. Precision: the
samples flagged with it that carry it. False-positive rate: benign samples flagged at all.

Each hook is measured inside a real sandbox as the difference between the same loop with the
monitor on and off (N execs of /bin/true from one shell; N connections to a closed loopback
port from one Python process), divided by N. The rule layer is `Rules.check` with the shipped
rules over the command lines of the rule tests, in this process. Create→first exec is
`Sandbox.create()` to the end of the first `exec("true")`, with the monitor on and off
(warm pools in their default state, as a user has them). Prints a table and exits 0.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time

from common import console, figures_table, headline, machine, pct

from rockroll import Sandbox, Snapshot
from rockroll.errors import ExecError
from rockroll.safety import default_rules
from rockroll.safety.labelled import CLASSES, OBFUSCATIONS, STAND_INS, Sample, samples
from rockroll.sandbox.spec import DEFAULT_PATH
from rockroll.sandbox.watch import Rules

STEP_TIMEOUT = 15.0

CONNECTS = (
    "import socket, time\n"
    "t = time.perf_counter()\n"
    "for _ in range({n}):\n"
    "    s = socket.socket(); s.connect_ex(('127.0.0.1', 9)); s.close()\n"
    "print(time.perf_counter() - t)\n"
)


def loop_seconds(sb: Sandbox, n: int) -> tuple[float, float]:
    """Seconds for n execs of /bin/true, and for n loopback connections, inside `sb`."""
    execs = sb.exec(f"s=$(date +%s.%N); for i in $(seq {n}); do /bin/true; done; e=$(date +%s.%N); "
                    "echo \"$e - $s\" | python3 -c 'print(eval(input()))'")  # fmt: skip
    sb.write_text("/tmp/c.py", CONNECTS.format(n=n))
    connects = sb.exec("python3 /tmp/c.py")
    return float(execs.stdout), float(connects.stdout)


def starts(monitor: bool, count: int) -> list[float]:
    out = []
    for _ in range(count):
        t = time.perf_counter()
        with Sandbox.create(monitor=monitor) as sb:
            sb.exec("true")
            out.append(time.perf_counter() - t)
    return out[5:]


def flagged(sample: Sample, base: Snapshot) -> set[str]:
    """The rule classes the monitor flagged while the sample ran in a fork of `base`."""
    env = {"PATH": "/opt/fake:" + DEFAULT_PATH}
    with base.fork() as sb:
        for step in sample.steps:
            with contextlib.suppress(ExecError):  # a rule refused the step's own shell
                sb.exec(step, env=env, timeout=STEP_TIMEOUT)
        return {r["class"] for e in sb.events() for r in e.get("rules", [])}


def evaluate(console_every: float = 20.0) -> tuple[list, dict[str, float]]:
    """Rows for the labelled set's table, and the headline figures."""
    stubs = "; ".join(
        f"printf '#!/bin/sh\\nexit 0\\n' > /opt/fake/{p}; chmod +x /opt/fake/{p}" for p in STAND_INS
    )
    with Sandbox.create(memory="512m", pids=256, rules=default_rules()) as sb:
        sb.exec(f"mkdir -p /opt/fake; {stubs}")
        base = sb.snapshot()
    results = []
    last = time.monotonic()
    everything = samples()
    for i, sample in enumerate(everything, 1):
        results.append((sample, flagged(sample, base)))
        if time.monotonic() - last > console_every:
            console.print(f"labelled set: {i}/{len(everything)} samples run")
            last = time.monotonic()
    base.remove()
    rows: list = []
    figures: dict[str, float] = {}
    worst = 1.0
    for klass in CLASSES:
        mine = [f for s, f in results if s.label == klass]
        caught = sum(klass in f for f in mine)
        said = [s.label for s, f in results if klass in f]
        recall = caught / len(mine)
        precision = said.count(klass) / len(said) if said else 0.0
        worst = min(worst, recall)
        by = {o: [klass in f for s, f in results if s.label == klass and s.obfuscation == o]
              for o in OBFUSCATIONS}  # fmt: skip
        missed = ", ".join(f"{o} {sum(v)}/{len(v)}" for o, v in by.items() if v and not all(v))
        note = f"{caught}/{len(mine)}; " + (missed or "all")
        foreign = [s.id for s, f in results if klass in f and s.label != klass]
        if foreign:
            note += f"; also flagged: {', '.join(foreign[:3])}"
        measured = f"{recall:.2f} / {precision:.2f}"
        rows.append((f"{klass}: recall / precision", measured, "≥ 0.95", recall >= 0.95, note))
    benign = [(s, f) for s, f in results if s.label == "benign"]
    false = [s.id for s, f in benign if f]
    fpr = len(false) / len(benign)
    rows.append(("benign samples flagged (FPR)", f"{fpr:.3f}", "≤ 0.01", fpr <= 0.01,
                 f"{len(false)}/{len(benign)}: {', '.join(false[:6])}"))  # fmt: skip
    figures.update(worst_recall=worst, fpr=fpr, samples=len(results))
    return rows, figures


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000, help="execs and connections per loop")
    ap.add_argument("--starts", type=int, default=60, help="sandboxes per create→first exec")
    ap.add_argument("--only-cost", action="store_true", help="skip the labelled set")
    args = ap.parse_args()
    console.print(headline("safety_bench", machine()))
    if not args.only_cost:
        started = time.monotonic()
        rows, figures = evaluate()
        console.print(f"labelled set: {figures['samples']:.0f} samples in "
                      f"{time.monotonic() - started:.0f} s")  # fmt: skip
        console.print(figures_table(rows))

    with (
        Sandbox.create(monitor=True, rules=default_rules()) as on,
        Sandbox.create(monitor=False) as off,
    ):
        loop_seconds(on, 50), loop_seconds(off, 50)
        on_exec, on_conn = loop_seconds(on, args.n)
        off_exec, off_conn = loop_seconds(off, args.n)
    exec_hook = (on_exec - off_exec) / args.n
    conn_hook = (on_conn - off_conn) / args.n

    rules = Rules(default_rules())
    lines = [step for sample in samples() for step in sample.steps]
    timings = []
    for _ in range(20):
        for line in lines:
            event = {"kind": "exec", "argv": line.split(), "path": line.split()[0]}
            t = time.perf_counter()
            rules.check(event)
            timings.append(time.perf_counter() - t)

    with_monitor = starts(True, args.starts)
    without = starts(False, args.starts)
    p50_on, p50_off = statistics.median(with_monitor), statistics.median(without)
    rows = [
        ("exec hook", f"{exec_hook * 1e6:.0f} µs", "≤ 1 ms", exec_hook <= 1e-3,
         f"{args.n} execs: {on_exec:.2f} s on, {off_exec:.2f} s off"),
        ("connect hook", f"{conn_hook * 1e6:.0f} µs", "≤ 1 ms", conn_hook <= 1e-3,
         f"{args.n} connections: {on_conn:.2f} s on, {off_conn:.2f} s off"),
        ("rule layer per command (p50 / p99)",
         f"{pct(timings, 50) * 1e6:.0f} / {pct(timings, 99) * 1e6:.0f} µs", "≤ 5 ms",
         pct(timings, 99) <= 5e-3, f"{len(rules.rules)} rules, {len(lines)} command lines"),
        ("create→first exec p50, monitor on", f"{p50_on * 1e3:.2f} ms", "≤ 15 ms", p50_on <= 0.015,
         f"p99 {pct(with_monitor, 99) * 1e3:.2f} ms"),
        ("create→first exec p50, monitor off", f"{p50_off * 1e3:.2f} ms", "", None,
         f"p99 {pct(without, 99) * 1e3:.2f} ms"),
    ]  # fmt: skip
    console.print(figures_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
