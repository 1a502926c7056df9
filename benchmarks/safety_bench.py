"""The monitor's cost: per exec, per connection, per rule check, and on a sandbox's start.

    .venv/bin/python benchmarks/safety_bench.py [--n 2000] [--starts 60]

Each hook is measured inside a real sandbox as the difference between the same loop with the
monitor on and off (N execs of /bin/true from one shell; N connections to a closed loopback
port from one Python process), divided by N. The rule layer is `Rules.check` with the shipped
rules over the command lines of the rule tests, in this process. Create→first exec is
`Sandbox.create()` to the end of the first `exec("true")`, with the monitor on and off
(warm pools in their default state, as a user has them). Prints a table and exits 0.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from common import console, figures_table, headline, machine, pct

from rockroll import Sandbox
from rockroll.safety import default_rules
from rockroll.sandbox.watch import Rules

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.safety.test_rules import CAUGHT, NEAR_MISSES

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


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000, help="execs and connections per loop")
    ap.add_argument("--starts", type=int, default=60, help="sandboxes per create→first exec")
    args = ap.parse_args()
    console.print(headline("safety_bench", machine()))

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
    lines = [line for _, line in CAUGHT] + NEAR_MISSES
    samples = []
    for _ in range(20):
        for line in lines:
            event = {"kind": "exec", "argv": line.split(), "path": line.split()[0]}
            t = time.perf_counter()
            rules.check(event)
            samples.append(time.perf_counter() - t)

    with_monitor = starts(True, args.starts)
    without = starts(False, args.starts)
    p50_on, p50_off = statistics.median(with_monitor), statistics.median(without)
    rows = [
        ("exec hook", f"{exec_hook * 1e6:.0f} µs", "≤ 1 ms", exec_hook <= 1e-3,
         f"{args.n} execs: {on_exec:.2f} s on, {off_exec:.2f} s off"),
        ("connect hook", f"{conn_hook * 1e6:.0f} µs", "≤ 1 ms", conn_hook <= 1e-3,
         f"{args.n} connections: {on_conn:.2f} s on, {off_conn:.2f} s off"),
        ("rule layer per command (p50 / p99)",
         f"{pct(samples, 50) * 1e6:.0f} / {pct(samples, 99) * 1e6:.0f} µs", "≤ 5 ms",
         pct(samples, 99) <= 5e-3, f"{len(rules.rules)} rules, {len(lines)} command lines"),
        ("create→first exec p50, monitor on", f"{p50_on * 1e3:.2f} ms", "≤ 15 ms", p50_on <= 0.015,
         f"p99 {pct(with_monitor, 99) * 1e3:.2f} ms"),
        ("create→first exec p50, monitor off", f"{p50_off * 1e3:.2f} ms", "", None,
         f"p99 {pct(without, 99) * 1e3:.2f} ms"),
    ]  # fmt: skip
    console.print(figures_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
