"""Sandbox performance figures against their targets, with podman as the peer.

    .venv/bin/python benchmarks/sandbox_bench.py [--n 100] [--idle 500] [--json out.json]
                                                 [--skip-podman] [--skip-large]

Prints a table of figures with targets and PASS/FAIL marks and exits 0: it reports, it does not
test. Timings use `time.perf_counter`; each series starts with uncounted warm-up runs.
Percentiles are nearest-rank on the sorted samples: pQ = sorted[ceil(Q/100 * n) - 1].
See benchmarks/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import mmap
import os
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common import console, figures_table, headline, machine, meminfo, pct

from rockroll import Sandbox, SandboxError, Snapshot
from rockroll.sandbox.cgroups import CgroupSet
from rockroll.sandbox.images import get_image
from rockroll.sandbox.local import LocalSandbox
from rockroll.sandbox.runtime import local_runtime

WARMUP = 5
PODMAN_BUDGET_S = 60.0
PODMAN_CAP = 30
LARGE_BYTES = 8 << 30
PAGE = mmap.PAGESIZE


def ms(seconds: float) -> float:
    return round(seconds * 1e3, 2)


def summary(samples: list[float]) -> dict[str, float]:
    """p50/p99/min/max in milliseconds, and the sample count."""
    return {
        "n": len(samples),
        "p50_ms": ms(pct(samples, 50)),
        "p99_ms": ms(pct(samples, 99)),
        "min_ms": ms(min(samples)),
        "max_ms": ms(max(samples)),
    }


@dataclass
class Row:
    """One line of the table."""

    name: str
    value: str
    target: str = ""
    ok: bool | None = None
    note: str = ""


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)

    def add(self, name: str, value: str, target: str = "", ok: bool | None = None, note: str = ""):
        self.rows.append(Row(name, value, target, ok, note))


# -- machine -------------------------------------------------------------------------------------
def raise_nofile() -> None:
    """Lift the soft fd limit to the hard one (hundreds of live sandboxes hold fds here)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


# -- measurements --------------------------------------------------------------------------------
def describe(exc: BaseException) -> str:
    """The error and what it was raised while handling (teardown errors hide the cause)."""
    parts, seen = [], exc
    while seen is not None and len(parts) < 4:
        parts.append(f"{type(seen).__name__}: {seen}")
        seen = seen.__cause__ or seen.__context__
    return " <- ".join(parts)


def series(n: int, warmup: int, one: Callable[[], Any], errors: list[str]) -> list[Any]:
    """`n` results of `one()` after `warmup` uncounted calls; failed calls are logged, retried."""
    out: list[Any] = []
    done = 0
    while len(out) < n:
        try:
            value = one()
        except SandboxError as exc:
            errors.append(describe(exc))
            if len(errors) > max(5, n // 10):
                raise
            continue
        done += 1
        if done > warmup:
            out.append(value)
    return out


def create_first_exec(n: int, warmup: int = WARMUP, **settings: Any) -> dict[str, Any]:
    """`Sandbox.create()` start to the end of the first `exec("true")`; close timed apart."""

    def one() -> tuple[float, float, float]:
        t0 = time.perf_counter()
        sb = Sandbox.create(**settings)
        t1 = time.perf_counter()
        try:
            res = sb.exec("true")
            t2 = time.perf_counter()
            if res.exit_code != 0:
                raise SandboxError(f"`true` exited {res.exit_code}: {res.stderr}")
        finally:
            t3 = time.perf_counter()
            sb.close()
            t4 = time.perf_counter()
        return t2 - t0, t1 - t0, t4 - t3

    errors: list[str] = []
    rows = series(n, warmup, one, errors)
    return {
        "total": summary([r[0] for r in rows]),
        "create": summary([r[1] for r in rows]),
        "close": summary([r[2] for r in rows]),
        "errors": errors,
    }


def create_first_exec_cold(n: int) -> dict[str, Any]:
    """The same with the warm pool off: every sandbox is started from scratch."""
    runtime = local_runtime()
    size, runtime.warm.size = runtime.warm.size, 0
    try:
        return create_first_exec(n)
    finally:
        runtime.warm.size = size


def exec_round_trip(n: int, warmup: int = 10) -> dict[str, Any]:
    """`exec("true")` (bash -c) and `exec(["true"])` (argv) in one running sandbox."""
    out: dict[str, Any] = {"errors": []}
    with Sandbox.create() as sb:
        for label, cmd in (("bash", "true"), ("argv", ["true"])):

            def one(cmd: str | list[str] = cmd) -> float:
                t0 = time.perf_counter()
                res = sb.exec(cmd)
                t1 = time.perf_counter()
                if res.exit_code != 0:
                    raise SandboxError(f"{cmd!r} exited {res.exit_code}")
                return t1 - t0

            out[label] = summary(series(n, warmup, one, out["errors"]))
    return out


def fork_figures(n: int, warmup: int = WARMUP) -> dict[str, Any]:
    """snapshot(); snap.fork() + first exec; sb.fork() + first exec (snapshot + create)."""
    snaps: list[Snapshot] = []
    errors: list[str] = []
    with Sandbox.create(workdir="/app") as sb:
        for i in range(5):
            sb.write_text(f"file{i}.txt", f"small file {i}\n" * 8)

        def snapshot() -> float:
            t0 = time.perf_counter()
            snaps.append(sb.snapshot())
            return time.perf_counter() - t0

        def fork_then_exec(make: Callable[[], Sandbox]) -> Callable[[], float]:
            def one() -> float:
                t0 = time.perf_counter()
                child = make()
                try:
                    child.exec("true")
                    t1 = time.perf_counter()
                    if child.read_text("file0.txt") != "small file 0\n" * 8:
                        raise SandboxError("the fork lost the parent's files")
                finally:
                    child.close()
                return t1 - t0

            return one

        try:
            snap_t = series(n, warmup, snapshot, errors)
            from_snap_t = series(n, warmup, fork_then_exec(lambda: snaps[0].fork()), errors)
            full_t = series(n, warmup, fork_then_exec(sb.fork), errors)
        finally:
            for snap in snaps:
                with contextlib.suppress(Exception):
                    snap.remove()
            # sb.fork() leaves its snapshots behind (the SDK returns no handle to them).
            _remove_snapshots_of(sb.id)
    return {
        "snapshot": summary(snap_t),
        "snap_fork_first_exec": summary(from_snap_t),
        "sb_fork_first_exec": summary(full_t),
        "errors": errors,
    }


def _remove_snapshots_of(sandbox_id: str) -> None:
    from rockroll.sandbox.records import snapshots_dir

    for meta in snapshots_dir().glob("snap-*/meta.json"):
        with contextlib.suppress(Exception):
            if json.loads(meta.read_text()).get("source") == sandbox_id:
                shutil.rmtree(meta.parent)


def pss_bytes(pid: int) -> int:
    """Proportional set size of one process (0 if it is gone)."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return 0
    for line in text.splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) * 1024
    return 0


def idle_sandboxes(count: int, memory: str = "64m") -> dict[str, Any]:
    """Keep `count` sandboxes alive at once; memory per sandbox; all answer exec at the end."""
    live: list[Sandbox] = []
    fds0 = open_fds()
    avail0 = meminfo()["MemAvailable"]
    error = ""
    t0 = time.perf_counter()
    try:
        for _ in range(count):
            live.append(Sandbox.create(memory=memory))
    except Exception as exc:
        error = describe(exc)
    create_s = time.perf_counter() - t0
    try:
        time.sleep(1.0)  # let deferred kernel work (RCU frees, page-cache settling) land
        avail1 = meminfo()["MemAvailable"]
        fds1 = open_fds()
        pss = procs = charged = 0
        for sb in live:
            assert isinstance(sb, LocalSandbox)  # the figures are of this machine's sandboxes
            cg = CgroupSet.attach(str(sb.record.cgroup))
            pids = cg.pids()
            procs += len(pids)
            pss += sum(pss_bytes(p) for p in pids)
            charged += cg.memory_usage() or 0
        answered = 0
        for sb in live:
            try:
                answered += sb.exec(["true"]).exit_code == 0
            except SandboxError as exc:
                error = error or f"exec: {describe(exc)}"
    finally:
        t1 = time.perf_counter()
        close_errors = 0
        for sb in live:
            try:
                sb.close()
            except SandboxError as exc:
                close_errors += 1
                error = error or f"close: {describe(exc)}"
        close_s = time.perf_counter() - t1
    k = max(len(live), 1)
    return {
        "requested": count,
        "created": len(live),
        "answered": answered,
        "error": error,
        "create_total_s": round(create_s, 2),
        "close_total_s": round(close_s, 2),
        "close_errors": close_errors,
        "mem_available_drop_per_sandbox_mib": round((avail0 - avail1) / k / (1 << 20), 2),
        "pss_per_sandbox_mib": round(pss / k / (1 << 20), 2),
        "cgroup_charged_per_sandbox_mib": round(charged / k / (1 << 20), 2),
        "processes_per_sandbox": round(procs / k, 2),
        "caller_fds_per_sandbox": round((fds1 - fds0) / k, 2),
    }


def podman_peer(n: int) -> dict[str, Any]:
    """`podman run --rm --network none` on the base image rootfs (an overlay on top, `:O`)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    rootfs = get_image("base").rootfs
    argv = [
        "podman", "--runtime", "runc", "--cgroup-manager", "cgroupfs", "run", "--rm",
        "--network", "none", "--ulimit", f"nofile={soft}:{hard}",
        "--ulimit", "nproc=4096:4096", "--rootfs", f"{rootfs}:O", "true",
    ]  # fmt: skip

    def once() -> float:
        t0 = time.perf_counter()
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        elapsed = time.perf_counter() - t0
        if done.returncode != 0:
            raise RuntimeError(f"podman run failed ({done.returncode}): {done.stderr.strip()}")
        return elapsed

    for _ in range(2):
        once()
    probe = once()
    runs, note = n, ""
    if n > PODMAN_CAP and probe * n > PODMAN_BUDGET_S:
        runs = PODMAN_CAP
        note = f"{runs} of {n} runs: {n} would take ~{probe * n:.0f} s (> {PODMAN_BUDGET_S:.0f} s)"
    samples = [once() for _ in range(runs)]
    return {"command": " ".join(argv), "note": note, **summary(samples)}


def large_caller(n: int) -> dict[str, Any]:
    """Run `_large_child` in a fresh process: small p50, then p50 holding 8 GiB resident."""
    done = subprocess.run(
        [sys.executable, __file__, "--large-child", str(n)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    if done.returncode != 0:
        raise RuntimeError(f"large-caller child failed ({done.returncode}): {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def vm_rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def _large_child(n: int) -> None:
    """Child side of `large_caller`: prints one JSON line."""
    small = create_first_exec(n)
    mem = mmap.mmap(-1, LARGE_BYTES, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    t0 = time.perf_counter()
    for off in range(0, LARGE_BYTES, PAGE):
        mem[off] = 1
    touch_s = time.perf_counter() - t0
    rss = vm_rss()
    if rss < LARGE_BYTES:
        raise RuntimeError(f"only {rss} bytes resident after touching {LARGE_BYTES}")
    large = create_first_exec(n)
    mem.close()
    print(
        json.dumps(
            {
                "n": n,
                "rss_gib": round(rss / (1 << 30), 2),
                "touch_s": round(touch_s, 2),
                "small": small,
                "large": large,
            }
        )
    )


# -- output --------------------------------------------------------------------------------------
def render(report: Report, info: dict[str, Any]) -> None:
    console.print(headline("rockroll sandbox benchmark", info))
    rows = [(r.name, r.value, r.target, r.ok, r.note) for r in report.rows]
    console.print(figures_table(rows))
    console.print(
        "Percentiles: nearest rank on sorted samples (pQ = sorted[ceil(Q/100*n)-1]); "
        f"{WARMUP} uncounted warm-up runs per series (10 for exec).",
        markup=False,
    )


def section(title: str, fn: Callable[[], Any], report: Report) -> Any:
    """Run one measurement; a failure becomes a table row instead of ending the run."""
    console.print(f"[dim]… {title}[/dim]")
    t0 = time.perf_counter()
    try:
        return fn()
    except Exception as exc:
        report.add(title, "error", ok=False, note=describe(exc)[:200])
        report.figures.setdefault("failed", {})[title] = describe(exc)
        return None
    finally:
        console.print(f"[dim]  done in {time.perf_counter() - t0:.1f} s[/dim]")


def errors_note(figures: dict[str, Any]) -> str:
    errors = figures.get("errors") or []
    return f"{len(errors)} failed tries retried: {errors[0][:90]}" if errors else ""


def add_create(rep: Report, cfe: dict[str, Any]) -> None:
    t = cfe["total"]
    rep.add("create→first exec p50", f"{t['p50_ms']} ms", "≤ 15 ms", t["p50_ms"] <= 15)
    rep.add(
        "create→first exec p99", f"{t['p99_ms']} ms", "≤ 60 ms", t["p99_ms"] <= 60, errors_note(cfe)
    )
    c = cfe["create"]
    rep.add("  of which Sandbox.create() p50", f"{c['p50_ms']} ms", note=f"p99 {c['p99_ms']} ms")
    c = cfe["close"]
    rep.add("close() p50", f"{c['p50_ms']} ms", note=f"p99 {c['p99_ms']} ms (not in the above)")


def add_exec(rep: Report, ex: dict[str, Any]) -> None:
    for label, key in (
        ('exec("true") p50 (bash -c)', "bash"),
        ('exec(["true"]) p50 (argv)', "argv"),
    ):
        f = ex[key]
        rep.add(label, f"{f['p50_ms']} ms", "≤ 3 ms", f["p50_ms"] <= 3, f"p99 {f['p99_ms']} ms")


def add_fork(rep: Report, fk: dict[str, Any]) -> None:
    snap, child, full = fk["snapshot"], fk["snap_fork_first_exec"], fk["sb_fork_first_exec"]
    rep.add("snapshot() p50", f"{snap['p50_ms']} ms", note=f"p99 {snap['p99_ms']} ms")
    rep.add(
        "snap.fork()→first exec p50",
        f"{child['p50_ms']} ms",
        "≤ 20 ms",
        child["p50_ms"] <= 20,
        f"p99 {child['p99_ms']} ms",
    )
    rep.add(
        "sb.fork()→first exec p50",
        f"{full['p50_ms']} ms",
        "≤ 20 ms",
        full["p50_ms"] <= 20,
        f"p99 {full['p99_ms']} ms; snapshot + create + exec. {errors_note(fk)}",
    )


def add_idle(rep: Report, idle: dict[str, Any]) -> None:
    rep.add(
        "idle sandboxes alive, answering exec",
        f"{idle['answered']}/{idle['requested']}",
        "≥ 500",
        idle["answered"] >= 500,
        idle["error"][:200] or f"created in {idle['create_total_s']} s (memory=64m)",
    )
    per = idle["mem_available_drop_per_sandbox_mib"]
    rep.add(
        "  memory per sandbox (MemAvailable drop)",
        f"{per} MiB",
        "≤ 4 MiB",
        per <= 4,
        f"PSS {idle['pss_per_sandbox_mib']} MiB, memcg {idle['cgroup_charged_per_sandbox_mib']} "
        f"MiB, {idle['processes_per_sandbox']} procs, {idle['caller_fds_per_sandbox']} caller fds",
    )
    rep.add(
        "  close all",
        f"{idle['close_total_s']} s",
        note=f"{idle['close_errors']} close errors",
    )


def add_cold(rep: Report, cold: dict[str, Any]) -> None:
    t = cold["total"]
    rep.add(
        "create→first exec p50, warm pool off",
        f"{t['p50_ms']} ms",
        note=f"p99 {t['p99_ms']} ms; ROCKROLL_WARM=0: every sandbox started from scratch",
    )


def add_podman(
    rep: Report, pm: dict[str, Any], rockroll_p50: float | None, cold_p50: float | None
) -> None:
    rep.add("podman run→exit p50 (peer)", f"{pm['p50_ms']} ms", note=pm["note"] or "")
    if rockroll_p50:
        ratio = pm["ratio_vs_rockroll_p50"] = round(pm["p50_ms"] / rockroll_p50, 1)
        rep.add(
            "podman p50 / rockroll p50",
            f"{ratio}x",
            "≥ 20x",
            ratio >= 20,
            f"podman p99 {pm['p99_ms']} ms",
        )
    if cold_p50:
        ratio = pm["ratio_vs_rockroll_cold_p50"] = round(pm["p50_ms"] / cold_p50, 1)
        rep.add("podman p50 / rockroll p50, warm pool off", f"{ratio}x")


def add_large(rep: Report, lg: dict[str, Any]) -> None:
    small_p50, large_p50 = lg["small"]["total"]["p50_ms"], lg["large"]["total"]["p50_ms"]
    ratio = lg["ratio"] = round(large_p50 / small_p50, 2)
    rep.add(
        "create→first exec p50, 8 GiB caller",
        f"{large_p50} ms",
        note=f"RSS {lg['rss_gib']} GiB, n={lg['n']}, p99 {lg['large']['total']['p99_ms']} ms",
    )
    rep.add("  same child process before allocating", f"{small_p50} ms")
    rep.add("  large / small", f"{ratio}x", "≤ 2x", ratio <= 2)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100, help="samples per latency figure")
    parser.add_argument("--idle", type=int, default=500, help="idle sandboxes kept alive at once")
    parser.add_argument("--json", type=Path, help="also write every figure to this file")
    parser.add_argument("--skip-podman", action="store_true")
    parser.add_argument("--skip-large", action="store_true", help="skip the 8 GiB caller")
    parser.add_argument("--large-n", type=int, default=30, help="samples for the 8 GiB caller")
    parser.add_argument("--large-child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    raise_nofile()
    if args.large_child is not None:
        _large_child(args.large_child)
        return 0

    info = machine()
    rep = Report(figures={"machine": info, "n": args.n})
    n = args.n

    def run(key: str, title: str, measure: Callable[[], Any]) -> Any:
        figures = section(title, measure, rep)
        if figures is not None:
            rep.figures[key] = figures
        return figures

    if cfe := run("create_first_exec", f"create→first exec x{n}", lambda: create_first_exec(n)):
        add_create(rep, cfe)
    if cold := run(
        "create_first_exec_cold", f"cold create x{n}", lambda: create_first_exec_cold(n)
    ):
        add_cold(rep, cold)
    if ex := run("exec", f"exec round trip x{n}", lambda: exec_round_trip(n)):
        add_exec(rep, ex)
    if fk := run("fork", f"snapshot / fork x{n}", lambda: fork_figures(n)):
        add_fork(rep, fk)
    if args.idle > 0 and (
        idle := run("idle", f"{args.idle} idle sandboxes", lambda: idle_sandboxes(args.idle))
    ):
        add_idle(rep, idle)
    if args.skip_podman:
        pass
    elif not shutil.which("podman"):
        rep.add("podman peer", "skipped", note="podman is not installed")
    elif pm := run("podman", f"podman run x{n}", lambda: podman_peer(n)):
        add_podman(
            rep,
            pm,
            cfe["total"]["p50_ms"] if cfe else None,
            cold["total"]["p50_ms"] if cold else None,
        )
    if not args.skip_large and (
        lg := run(
            "large_caller", f"8 GiB caller x{args.large_n}", lambda: large_caller(args.large_n)
        )
    ):
        add_large(rep, lg)

    render(rep, info)
    if args.json:
        args.json.write_text(json.dumps(rep.figures, indent=1))
        console.print(f"figures written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
