"""Task throughput: the oracle agent over a task suite, with the image cache cold, then warm.

    .venv/bin/python benchmarks/bench_throughput.py [--suite DIR] [--jobs 2] [--json out.json]
                                                    [--cold-base] [--keep-home] [--own-images N]

Both passes run in a temporary `ROCKROLL_HOME` next to the default one, so the user's cache is
neither used for task images nor changed. The debootstrap base images (`base`, `python3.13`:
every image whose image.json names a Debian suite) and the compiled init binary are copied into
it first, so "cold" means "no task image built yet". `--cold-base` instead starts from an empty
home and times building those bases (debootstrap) on its own, before the cold pass.

Each pass runs in its own child process (`ROCKROLL_HOME` is read at call time, and a fresh
process also starts with an empty warm pool): it loads the suite, then times `run_suite` with
the oracle agent and `--jobs` workers. The warm pass is the same run again in the same home,
into a fresh results folder so nothing is skipped by resume. Per-task phase times come from
`times` in each pass's results.jsonl. Percentiles are nearest-rank:
pQ = sorted[ceil(Q/100 * n) - 1].

Prints a table with targets and PASS/FAIL marks and exits 0: it reports, it does not test.
At the end it runs `rockroll sandbox gc` against the temporary home, checks that no process or
mount still refers to it, and removes it (kept, and said so, if anything is left).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import console, loadavg, machine, mark, pct
from rich.table import Table

SUITE = "/work/shared/tasks/evoeval"
PHASES = ("build", "sandbox", "agent", "verify")
TARGET_TASKS_PER_MIN = 60.0
PASS_TIMEOUT_S = 3600


def cpu_busy_s() -> float:
    """Seconds all CPUs of the host have spent busy since boot (/proc/stat; idle, iowait out)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    busy = sum(fields[:8]) - fields[3] - fields[4]  # user..steal, minus idle and iowait
    return busy / os.sysconf("SC_CLK_TCK")


# -- child side: one pass in the home named by ROCKROLL_HOME --------------------------------------
def child_bases(suite: str) -> dict[str, Any]:
    """Build the base images the suite's Dockerfiles map to (debootstrap); time each."""
    from rockroll.sandbox.dockerfile import parse, resolve_base
    from rockroll.sandbox.standins import from_reference
    from rockroll.tasks.schema import Task
    from rockroll.tasks.suites import load_suite

    refs: set[str] = set()
    for item in load_suite(suite):
        dockerfile = item.environment.dockerfile if isinstance(item, Task) else None
        if dockerfile is not None:
            first = next(i for i in parse(Path(dockerfile).read_text()) if i.keyword == "FROM")
            refs.add(from_reference(first.args))
    built: dict[str, float] = {}
    for ref in sorted(refs):
        t0 = time.perf_counter()
        name = resolve_base(ref).image
        built[f"{ref} -> {name}"] = round(time.perf_counter() - t0, 2)
    return {"bases": built, "total_s": round(sum(built.values()), 2)}


def child_run(suite: str, jobs: int, out: Path) -> dict[str, Any]:
    """Load the suite, then time `run_suite` with the oracle agent."""
    from rockroll.bench.agents import OracleAgent
    from rockroll.bench.runner import run_suite
    from rockroll.tasks.suites import load_suite

    t0 = time.perf_counter()
    items = load_suite(suite)
    load_s = time.perf_counter() - t0
    built: list[str] = []

    def log(line: str) -> None:
        if line.startswith("built "):
            built.append(line)

    t1 = time.perf_counter()
    results = run_suite(items, OracleAgent(), out, jobs=jobs, log=log)
    wall_s = time.perf_counter() - t1
    return {
        "load_s": round(load_s, 3),
        "wall_s": round(wall_s, 3),
        "tasks": len(results),
        "images_built": built,
    }


def spawn(mode: str, home: Path, args: argparse.Namespace, out: Path | None = None) -> dict:
    """Run this file in `--child-pass mode` with ROCKROLL_HOME=home; return its JSON line."""
    argv = [sys.executable, __file__, "--child-pass", mode, "--suite", args.suite]
    argv += ["--jobs", str(args.jobs)]
    if out is not None:
        argv += ["--child-out", str(out)]
    env = os.environ | {"ROCKROLL_HOME": str(home)}
    load0, busy0 = loadavg(), cpu_busy_s()
    t0 = time.perf_counter()
    done = subprocess.run(
        argv, env=env, capture_output=True, text=True, timeout=PASS_TIMEOUT_S, check=False
    )
    process_s = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"{mode} pass failed ({done.returncode}): {done.stderr[-3000:]}")
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    figures["process_s"] = round(process_s, 2)
    # the whole host, this run and anything else on it: other load shows up here
    capacity = process_s * (os.cpu_count() or 1)
    figures["host_cpu_busy"] = round((cpu_busy_s() - busy0) / capacity, 3)
    figures["loadavg_before"], figures["loadavg_after"] = load0, loadavg()
    return figures


# -- parent side ---------------------------------------------------------------------------------
def default_home() -> Path:
    env = os.environ.get("ROCKROLL_HOME")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "rockroll"


def debootstrap_images(home: Path) -> list[Path]:
    """Images in `home` built with debootstrap (their image.json names a suite)."""
    found = []
    for meta in sorted((home / "images").glob("*/image.json")):
        with contextlib.suppress(OSError, ValueError):
            if json.loads(meta.read_text()).get("suite"):
                found.append(meta.parent)
    return found


def prepare_home(src: Path, cold_base: bool) -> tuple[Path, list[str]]:
    """A fresh home next to `src`, with the base images and init binary copied unless cold_base."""
    src.parent.mkdir(parents=True, exist_ok=True)
    home = Path(tempfile.mkdtemp(prefix="rockroll-throughput-", dir=src.parent))
    (home / "images").mkdir()
    copied: list[str] = []
    if (src / "bin").is_dir():
        shutil.copytree(src / "bin", home / "bin", symlinks=True)
    if (src / "image-map.json").exists():
        shutil.copy2(src / "image-map.json", home / "image-map.json")
    if not cold_base:
        for image in debootstrap_images(src):
            # cp -a keeps owners, modes, devices and xattrs of the rootfs as debootstrap made them
            subprocess.run(["cp", "-a", str(image), str(home / "images" / image.name)], check=True)
            copied.append(image.name)
    return home, copied


def phase_figures(results: list[dict]) -> dict[str, Any]:
    totals = [r["times"].get("total", 0.0) for r in results]
    summed = sum(totals) or 1.0
    out: dict[str, Any] = {
        "task_s_sum": round(sum(totals), 2),
        "task_mean_s": round(sum(totals) / max(len(totals), 1), 3),
        "task_p95_s": round(pct(totals, 95), 3) if totals else 0.0,
        "share": {},
        "phase_mean_s": {},
        "phase_p95_s": {},
    }
    for phase in PHASES:
        values = [r["times"].get(phase, 0.0) for r in results]
        out["share"][phase] = round(sum(values) / summed, 4)
        out["phase_mean_s"][phase] = round(sum(values) / max(len(values), 1), 3)
        out["phase_p95_s"][phase] = round(pct(values, 95), 3) if values else 0.0
    return out


def measure_pass(name: str, home: Path, args: argparse.Namespace) -> dict[str, Any]:
    out = home / f"results-{name}"
    console.print(f"[bold]{name} pass[/bold]: oracle on {args.suite}, -j {args.jobs} ...")
    figures = spawn("run", home, args, out)
    lines = (out / "results.jsonl").read_text().splitlines()
    results = [json.loads(line) for line in lines if line.strip()]
    figures["passed"] = sum(bool(r.get("passed")) for r in results)
    figures["failed"] = {r["task"]: r.get("reason") for r in results if not r.get("passed")}
    figures["tasks_per_min"] = round(len(results) / figures["wall_s"] * 60, 1)
    figures.update(phase_figures(results))
    figures["parallelism"] = round(figures["task_s_sum"] / figures["wall_s"], 2)
    console.print(
        f"[dim]  {figures['passed']}/{len(results)} passed in {figures['wall_s']:.1f} s "
        f"({figures['tasks_per_min']} tasks/min)[/dim]"
    )
    return figures


def leftovers(home: Path) -> dict[str, list[str]]:
    """Sandbox records, host mounts and processes that still refer to `home`."""
    text = str(home)
    mounts = [
        line.split()[4]
        for line in Path("/proc/self/mountinfo").read_text().splitlines()
        if text in line
    ]
    procs = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if text in cmd:
                procs.append(f"{entry.name}: {cmd[:160]}")
    sandboxes = sorted(p.name for p in (home / "sandboxes").glob("*")) if home.exists() else []
    return {"sandboxes": sandboxes, "mounts": mounts, "processes": procs}


def cleanup(home: Path, keep: bool) -> dict[str, Any]:
    rockroll = Path(sys.executable).parent / "rockroll"
    argv = [str(rockroll)] if rockroll.exists() else [sys.executable, "-m", "rockroll.cli"]
    gc = subprocess.run(
        [*argv, "sandbox", "gc"],
        env=os.environ | {"ROCKROLL_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    left = leftovers(home)
    clean = not any(left.values())
    removed = False
    if clean and not keep:
        shutil.rmtree(home)
        removed = True
    return {
        "gc": (gc.stdout + gc.stderr).strip().splitlines()[-1:] or [""],
        "gc_rc": gc.returncode,
        "leftovers": left,
        "clean": clean,
        "home_removed": removed,
        "home": str(home),
    }


# -- output --------------------------------------------------------------------------------------
def render(fig: dict[str, Any]) -> None:
    info = fig["machine"]
    console.print(
        f"[bold]rockroll task throughput[/bold]  {info['date']}  |  {info['nproc']} CPUs "
        f"({info['cpu']}), {info['mem_total_gib']} GiB RAM, kernel {info['kernel']}, "
        f"Python {info['python']}"
    )
    cold, warm, n = fig["cold"], fig["warm"], fig["tasks"]
    table = Table(title=f"oracle on {fig['suite']} ({n} tasks), -j {fig['jobs']}")
    table.add_column("figure")
    table.add_column("cold", justify="right")
    table.add_column("warm", justify="right")
    table.add_column("target", justify="right")
    table.add_column("", justify="center")
    table.add_column("note")

    def row(
        name: str, key: str, fmt: str, target: str = "", ok: bool | None = None, note: str = ""
    ) -> None:
        table.add_row(name, fmt.format(cold[key]), fmt.format(warm[key]), target, mark(ok), note)

    all_passed = cold["passed"] == n and warm["passed"] == n
    failed = {f"{p}:{t}": r for p in ("cold", "warm") for t, r in fig[p]["failed"].items()}
    row("tasks passed", "passed", "{}/" + str(n), f"{n}/{n}", all_passed, _failed_note(failed))
    row("wall time", "wall_s", "{:.1f} s", note="run_suite only: suite loading and start excluded")
    row(
        "tasks / minute",
        "tasks_per_min",
        "{:.1f}",
        f"warm ≥ {TARGET_TASKS_PER_MIN:.0f}",
        warm["tasks_per_min"] >= TARGET_TASKS_PER_MIN,
    )
    row("per task mean", "task_mean_s", "{:.2f} s", note="times.total of each task")
    row("per task p95", "task_p95_s", "{:.2f} s")
    for phase in PHASES:
        table.add_row(
            f"  share in {phase}",
            f"{cold['share'][phase]:.1%}",
            f"{warm['share'][phase]:.1%}",
            "",
            "",
            f"mean {cold['phase_mean_s'][phase]:.3f} / {warm['phase_mean_s'][phase]:.3f} s, "
            f"p95 {cold['phase_p95_s'][phase]:.3f} / {warm['phase_p95_s'][phase]:.3f} s",
        )
    row("summed task time / wall", "parallelism", "{:.2f}", note="busy workers on average")
    row(
        "host CPU busy",
        "host_cpu_busy",
        "{:.0%}",
        note="all CPUs, whole child process, anything else running included",
    )
    table.add_row(
        "images built",
        str(len(cold["images_built"])),
        str(len(warm["images_built"])),
        "",
        "",
        "task images (df-*); bases copied in: " + (", ".join(fig["copied"]) or "none"),
    )
    if fig.get("bases"):
        b = fig["bases"]
        table.add_row(
            "debootstrap bases (--cold-base)",
            f"{b['total_s']:.1f} s",
            "",
            "",
            "",
            "; ".join(f"{k}: {v} s" for k, v in b["bases"].items()),
        )
    console.print(table)
    bases = (
        "the debootstrap base images built just before, timed apart (--cold-base)"
        if fig.get("bases")
        else "only the debootstrap base images copied in"
    )
    console.print(
        f"cold = no task image in the cache (a fresh ROCKROLL_HOME with the init binary and "
        f"{bases}); warm = the same run again with the images cached, into fresh results."
    )
    c = fig["cleanup"]
    state = "clean" if c["clean"] else f"[red]left behind: {c['leftovers']}[/red]"
    where = "removed" if c["home_removed"] else "kept"
    console.print(f"temporary home {c['home']}: {state}; {where}; gc: {c['gc'][0]}")


def _failed_note(failed: dict[str, str | None]) -> str:
    if not failed:
        return "oracle must pass every task, both passes"
    return "failed: " + ", ".join(f"{t} ({r})" for t, r in list(failed.items())[:5])


OWN_TEST = """\
#!/bin/bash
apt-get update
pip install -r /tests/requirements.txt
uvx --with pytest==8.3.4 --with pytest-json-ctrf==0.3.5 \\
  pytest --ctrf /logs/verifier/ctrf.json /tests/test_outputs.py -rA && ok=1
echo ${ok:-0} > /logs/verifier/reward.txt
"""
OWN_PYTEST = """\
from pathlib import Path

import iniconfig  # what requirements.txt installs


def test_answer():
    assert Path("/app/answer").read_text().strip() == "{n}"
"""


def write_own_suite(root: Path, count: int) -> Path:
    """`count` Harbor tasks of our own, each with its own Dockerfile (so its own image) and a
    test script that installs its tooling at test time: what the verifier-preparation layer is
    for. The first run builds every image and layer; the second must build nothing."""
    for n in range(count):
        task = root / f"own-{n:02d}"
        (task / "environment").mkdir(parents=True)
        (task / "tests").mkdir()
        (task / "solution").mkdir()
        (task / "instruction.md").write_text(f"Write {n} to /app/answer.\n")
        (task / "task.toml").write_text('[metadata]\ncategory = "own-images"\n')
        (task / "environment" / "Dockerfile").write_text(
            f"FROM python:3.11-slim\nWORKDIR /app\nRUN echo task-{n} > /etc/task-id\n"
        )
        (task / "solution" / "solve.sh").write_text(f"echo {n} > /app/answer\n")
        (task / "tests" / "test.sh").write_text(OWN_TEST)
        (task / "tests" / "requirements.txt").write_text("iniconfig==2.0.0\n")
        (task / "tests" / "test_outputs.py").write_text(OWN_PYTEST.replace("{n}", str(n)))
    return root


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default=SUITE, help=f"task folder (default {SUITE})")
    parser.add_argument("-j", "--jobs", type=int, default=2, help="tasks at once (default 2)")
    parser.add_argument("--json", type=Path, help="also write every figure to this file")
    parser.add_argument(
        "--cold-base", action="store_true", help="also build the debootstrap bases, timed apart"
    )
    parser.add_argument("--keep-home", action="store_true", help="keep the temporary home")
    parser.add_argument(
        "--own-images",
        type=int,
        metavar="N",
        help="instead of --suite: N tasks of our own, each with its own Dockerfile and test-time "
        "installs (the verifier-preparation layer's cold and warm cost)",
    )
    parser.add_argument("--child-pass", choices=("run", "bases"), help=argparse.SUPPRESS)
    parser.add_argument("--child-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_pass == "run":
        print(json.dumps(child_run(args.suite, args.jobs, args.child_out)))
        return 0
    if args.child_pass == "bases":
        print(json.dumps(child_bases(args.suite)))
        return 0

    home, copied = prepare_home(default_home(), args.cold_base)
    if args.own_images:
        args.suite = str(write_own_suite(home / "own-suite", args.own_images))
    fig: dict[str, Any] = {"machine": machine(), "suite": args.suite, "jobs": args.jobs}
    fig["copied"] = copied
    console.print(f"temporary home {home}; copied from {default_home()}: {fig['copied']}")
    if not args.cold_base and not fig["copied"]:
        console.print(
            "[yellow]no debootstrap base image in the default home: the cold pass will build "
            "the bases too (use --cold-base to time them apart)[/yellow]"
        )
    try:
        if args.cold_base:
            console.print("[bold]bases[/bold]: building the debootstrap base images ...")
            fig["bases"] = spawn("bases", home, args)
        fig["cold"] = measure_pass("cold", home, args)
        fig["warm"] = measure_pass("warm", home, args)
        fig["tasks"] = fig["cold"]["tasks"]
        fig["target_warm_tasks_per_min"] = TARGET_TASKS_PER_MIN
        fig["warm_target_met"] = fig["warm"]["tasks_per_min"] >= TARGET_TASKS_PER_MIN
    finally:
        fig["cleanup"] = cleanup(home, args.keep_home)
    if args.json:
        args.json.write_text(json.dumps(fig, indent=1))
    render(fig)
    if args.json:
        console.print(f"figures written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
