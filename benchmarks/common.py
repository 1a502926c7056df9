"""What every benchmark script shares: percentiles, the machine it ran on, PASS/FAIL marks.

Benchmarks run as scripts (`python benchmarks/NAME.py`), so this folder is on `sys.path`.
"""

from __future__ import annotations

import contextlib
import datetime
import math
import os
import platform
import resource
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

console = Console(width=max(Console().width, 132))


def pct(samples: list[float], q: float) -> float:
    """Nearest-rank percentile `q` (0-100) of `samples`."""
    s = sorted(samples)
    return s[max(0, math.ceil(q / 100 * len(s)) - 1)]


def meminfo() -> dict[str, int]:
    """/proc/meminfo in bytes."""
    out = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts:
            out[key] = int(parts[0]) * (1024 if len(parts) > 1 else 1)
    return out


def machine() -> dict[str, Any]:
    mem = meminfo()
    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "kernel": platform.release(),
        "mem_total_gib": round(mem["MemTotal"] / (1 << 30), 1),
        "mem_available_gib": round(mem["MemAvailable"] / (1 << 30), 1),
        "python": platform.python_version(),
        "nofile": list(resource.getrlimit(resource.RLIMIT_NOFILE)),
    }


def mark(ok: bool | None) -> str:
    if ok is None:
        return ""
    return "[green]PASS[/green]" if ok else "[red]FAIL[/red]"


def headline(title: str, info: dict[str, Any], extra: str = "") -> str:
    """The first line of a benchmark's output: what ran, when, and on which machine."""
    return (
        f"[bold]{title}[/bold]  {info['date']}  |  {info['nproc']} CPUs ({info['cpu']}), "
        f"{info['mem_total_gib']} GiB RAM, kernel {info['kernel']}, Python {info['python']}"
        f"{extra}"
    )


def figures_table(rows: list[tuple[str, str, str, bool | None, str]]) -> Table:
    """Figures as (name, measured, target, ok, note) rows, with PASS/FAIL marks."""
    table = Table(show_lines=False)
    for column, justify in (("figure", "left"), ("measured", "right"), ("target", "right")):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    table.add_column("", justify="center")
    table.add_column("note")
    for name, value, target, ok, note in rows:
        table.add_row(name, value, target, mark(ok), note)
    return table
