"""What every benchmark script shares: percentiles and medians, the machine it ran on and its
load, this process's memory and CPU time, saved runs, PASS/FAIL marks.

Benchmarks run as scripts (`python benchmarks/NAME.py`), so this folder is on `sys.path`.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import math
import os
import platform
import resource
import statistics
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

console = Console(width=max(Console().width, 132))


def pct(samples: list[float], q: float) -> float:
    """Nearest-rank percentile `q` (0-100) of `samples`."""
    s = sorted(samples)
    return s[max(0, math.ceil(q / 100 * len(s)) - 1)]


def median_of(rows: list[dict[str, Any]], key: str) -> float:
    """The median of `key` over the rows that have a number there (NaN when none has)."""
    values = [r[key] for r in rows if isinstance(r.get(key), int | float)]
    return statistics.median(values) if values else float("nan")


def mean_std(values: list[float]) -> str:
    """Shares as "mean ± std" in percent (std 0 for a single value)."""
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.0%} ± {std:.0%}"


def loadavg() -> list[float]:
    """The host's 1, 5 and 15 minute load averages."""
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def rss_bytes() -> int:
    """This process's resident set now (VmRSS)."""
    return _status_bytes("VmRSS:") or 0


def peak_rss_bytes() -> int:
    """This process's peak resident set (VmHWM)."""
    peak = _status_bytes("VmHWM:")
    if peak is None:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return peak


def _status_bytes(field: str) -> int | None:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1]) * 1024
    return None


def cpu_seconds(pid: int | None = None, *, children: bool = False) -> float:
    """User + system CPU time of process `pid` (default: this one, with its threads, and with
    `children` also its waited-for children's, such as the sandboxes' commands)."""
    if pid is not None:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    total = 0.0
    for who in (resource.RUSAGE_SELF, *([resource.RUSAGE_CHILDREN] if children else [])):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


def saved_runs(path: str | Path | None) -> list[dict]:
    """The runs an earlier invocation saved to the `--json` file `path` (none without it)."""
    if not path or not Path(path).exists():
        return []
    try:
        return json.loads(Path(path).read_text())
    except json.JSONDecodeError as err:
        raise SystemExit(f"--json {path}: not JSON ({err}); move it away or pick another") from None


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
