"""`make demo`: a short, real tour of the sandbox runtime on this machine."""

from __future__ import annotations

import statistics
import time

from rich.console import Console
from rich.table import Table

from rockroll.sandbox.sdk import Sandbox


def run_demo(console: Console) -> int:
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
