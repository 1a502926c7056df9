"""Cgroup limits on the real host's kernel (needs root and writable cgroups), v1 or v2.

The `@host` tests assert what the kernel itself reports and does: the limits it holds, the OOM
kill, the refused forks, the throttled CPU, the frozen tasks. On this project's development
machines they run on a v1/v2 hybrid; tests/sandbox/test_cgroup_v2_vm.py runs them again in a VM
whose kernel has the unified hierarchy only. The tests on a fake directory tree at the end are
unit tests of the v2 code's own writes and error paths, not a proof that v2 works.
"""

from __future__ import annotations

import errno
import os
import shlex
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from rockroll.errors import InvalidArgument, SandboxNotFound, SetupError
from rockroll.sandbox import cgroups
from rockroll.sandbox.cgroups import CgroupSet, Layout

MiB = 1 << 20
Make = Callable[..., CgroupSet]


def _host_usable() -> str | None:
    """Why real-cgroup tests cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root"
    layout = Layout.detect()
    where = layout.placement()
    missing = [c for c in ("memory", "pids", "cpu", "freezer") if c not in where]
    if missing:
        return f"host lacks cgroup controllers {missing}"
    if not os.access(where["memory"], os.W_OK):
        return "cgroups are read-only here"
    return None


host = pytest.mark.skipif(_host_usable() is not None, reason=str(_host_usable()))


@pytest.fixture
def make() -> Iterator[Make]:
    """CgroupSet.create with a unique id; everything created is destroyed afterwards."""
    made: list[CgroupSet] = []

    def create(**limits: int | float | None) -> CgroupSet:
        cg = CgroupSet.create(f"test-{uuid.uuid4().hex[:12]}", **limits)  # type: ignore[arg-type]
        made.append(cg)
        return cg

    yield create
    for cg in made:
        cg.destroy()


def _start(cg: CgroupSet, command: str, **kw: object) -> subprocess.Popen[str]:
    """Start `command` inside the cgroups, the way the launcher does before exec'ing bwrap."""
    join = "".join(f"echo $$ > {shlex.quote(f)}; " for f in cg.procs_files())
    return subprocess.Popen(["sh", "-c", join + command], text=True, **kw)  # type: ignore[call-overload]


def _wait_for(cond: Callable[[], object], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


def _in_v2(cg: CgroupSet, ctrl: str) -> bool:
    return cg.v2_root is not None and cg.dirs[ctrl].is_relative_to(cg.v2_root)


def _kernel_limits(cg: CgroupSet) -> dict[str, int | None]:
    """The limits as the kernel reports them, from the v1 or v2 files of each controller
    (None: no such limit file, as for swap on a kernel without swap accounting)."""

    def number(path: Path) -> int | None:
        if not path.exists():
            return None
        text = path.read_text().strip()
        return -1 if text == "max" else int(text)

    mem, cpu = cg.dirs["memory"], cg.dirs["cpu"]
    if _in_v2(cg, "memory"):
        memory, swap = number(mem / "memory.max"), number(mem / "memory.swap.max")
    else:
        memory = number(mem / "memory.limit_in_bytes")
        memsw = number(mem / "memory.memsw.limit_in_bytes")
        swap = None if memsw is None or memory is None else memsw - memory
    if _in_v2(cg, "cpu"):
        quota_text, period_text = (cpu / "cpu.max").read_text().split()
        quota, period = (-1 if quota_text == "max" else int(quota_text)), int(period_text)
    else:
        quota, period = number(cpu / "cpu.cfs_quota_us"), number(cpu / "cpu.cfs_period_us")
    return {
        "memory": memory,
        "swap": swap,
        "pids": number(cg.dirs["pids"] / "pids.max"),
        "cpu_quota": quota,
        "cpu_period": period,
    }


def _cpu_throttled(cg: CgroupSet) -> int:
    """How many CFS periods the kernel throttled the cgroup in (cpu.stat, v1 and v2 alike)."""
    return cgroups._keyed((cg.dirs["cpu"] / "cpu.stat").read_text(), "nr_throttled") or 0


def test_the_layout_is_the_one_this_process_lives_in() -> None:
    """Layout.detect() against the kernel's own account of this process's cgroups: a
    controller is placed on v1 exactly when a v1 hierarchy of this process carries it."""
    layout = Layout.detect()
    lines = Path("/proc/self/cgroup").read_text().splitlines()
    v1_controllers = {
        c for line in lines for c in line.split(":")[1].split(",") if not line.startswith("0::")
    }
    assert set(layout.v1) == v1_controllers & set(cgroups.CONTROLLERS)
    if all(line.startswith("0::") for line in lines):  # the unified hierarchy only
        assert layout.v1 == {} and layout.v2 is not None
        assert set(layout.placement().values()) == {layout.v2}


@host
def test_limits_reach_the_kernel(make: Make) -> None:
    cg = make(memory=64 * MiB, pids=50, cpus=1.5)
    limits = _kernel_limits(cg)
    assert limits["memory"] == 64 * MiB
    assert limits["swap"] in (None, 0)  # no swap: the memory limit is the whole limit
    assert limits["pids"] == 50
    assert (limits["cpu_quota"], limits["cpu_period"]) == (150_000, 100_000)
    assert "freezer" in cg.dirs
    if _in_v2(cg, "memory"):
        # One cgroup for every controller, which its parent's subtree_control gives it.
        assert len(set(cg.dirs.values())) == 1
        d = cg.dirs["memory"]
        assert {"cpu", "memory", "pids"} <= set((d / "cgroup.controllers").read_text().split())
        parent = (d.parent / "cgroup.subtree_control").read_text().split()
        assert {"cpu", "memory", "pids"} <= set(parent)
        assert (d / "cgroup.freeze").exists() and (d / "cgroup.kill").exists()
    assert cg.sandbox_id in cgroups.existing_sandbox_ids()
    again = CgroupSet.attach(cg.sandbox_id)
    assert again.dirs == cg.dirs
    with pytest.raises(InvalidArgument, match="already exist"):
        CgroupSet.create(cg.sandbox_id)


@host
def test_limits_can_be_raised_and_lowered_later(make: Make) -> None:
    cg = make(memory=64 * MiB)
    for size in (2048 * MiB, 32 * MiB, 512 * MiB):
        cg.set_limits(size, 10, 0.5)
        limits = _kernel_limits(cg)
        assert limits["memory"] == size
        assert limits["swap"] in (None, 0)
    assert limits["pids"] == 10
    assert (limits["cpu_quota"], limits["cpu_period"]) == (50_000, 100_000)


@host
def test_memory_limit_oom_kills_inside_only(make: Make) -> None:
    cg = make(memory=64 * MiB)
    code = "b = b'x' * (200 << 20); print(len(b))"
    proc = _start(cg, f"exec {shlex.quote(sys.executable)} -c {shlex.quote(code)}")
    assert proc.wait(timeout=60) == -9
    assert cg.oom_killed()
    assert cg.oom_kill_count() >= 1
    assert cg.pids() == []


@host
def test_pids_limit_and_kill_all(make: Make, tmp_path: Path) -> None:
    cg = make(pids=50)
    loop = "for i in $(seq 200); do sleep 30 </dev/null >/dev/null 2>&1 & done; wait"
    err = tmp_path / "stderr"
    with open(err, "w") as stderr:
        proc = _start(cg, loop, stderr=stderr)
    events = cg.dirs["pids"] / "pids.events"
    _wait_for(lambda: (cgroups._keyed(events.read_text(), "max") or 0) > 0)
    _wait_for(lambda: "fork" in err.read_text().lower(), timeout=30)  # the shell was refused
    assert 40 <= len(cg.pids()) <= 50
    assert cg.kill_all()
    assert cg.pids() == []
    assert proc.wait(timeout=10) != 0


@host
def test_cpu_quota_throttles(make: Make) -> None:
    """A busy loop under a 0.2-CPU quota gets at most about that share of CPU time, and the
    kernel counts the periods it throttled it in. (An upper bound: load only lowers it.)"""
    cg = make(cpus=0.2)
    started = time.monotonic()
    proc = _start(cg, "while :; do :; done")
    time.sleep(3)
    throttled = _cpu_throttled(cg)
    proc.kill()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - started
    proc.returncode = -9  # reaped here, for Popen's bookkeeping
    cpu = usage.ru_utime + usage.ru_stime
    assert os.WIFSIGNALED(status)
    assert throttled >= 5, throttled
    assert 0 < cpu <= 0.2 * wall * 1.5 + 0.1, (cpu, wall)


@host
def test_a_sandboxs_cpu_quota_holds_its_commands(base_image: str) -> None:
    """The same through a sandbox: `cpus=0.25` bounds what a busy loop inside gets."""
    from rockroll import Sandbox

    script = (
        "t0=$(date +%s.%N); sh -c 'while :; do :; done' & pid=$!; sleep 3; "
        "read -r stat < /proc/$pid/stat; kill -9 $pid; t1=$(date +%s.%N); "
        'echo "$t0 $t1 ${stat##*) }"'
    )
    with Sandbox.create(base_image, cpus=0.25) as sb:
        res = sb.exec(script, timeout=60)
    assert res.exit_code == 0, res
    t0, t1, *fields = res.stdout.split()
    wall = float(t1) - float(t0)
    ticks = int(fields[11]) + int(fields[12])  # utime + stime, in 1/100 s
    assert 0 < ticks <= (0.25 * wall * 1.5 + 0.1) * 100, (ticks, wall)


@host
def test_freeze_and_thaw(make: Make, tmp_path: Path) -> None:
    cg = make()
    counter = tmp_path / "n"
    code = (
        "import os, time\ni = 0\nwhile True:\n    i += 1\n"
        f"    open({str(counter) + '.t'!r}, 'w').write(str(i)); os.replace("
        f"{str(counter) + '.t'!r}, {str(counter)!r}); time.sleep(0.005)"
    )
    proc = _start(cg, f"exec {shlex.quote(sys.executable)} -c {shlex.quote(code)}")
    try:
        _wait_for(counter.exists)
        cg.freeze()
        frozen_at = counter.read_text()
        time.sleep(0.3)
        assert counter.read_text() == frozen_at
        cg.thaw()
        _wait_for(lambda: counter.read_text() != frozen_at)
        cg.freeze()
        assert cg.kill_all()  # frozen v1 tasks cannot die until thawed; kill_all handles it
        assert proc.wait(timeout=10) == -9
    finally:
        proc.kill()
        proc.wait()


@host
def test_destroy_removes_directories(make: Make) -> None:
    cg = make(memory=64 * MiB, pids=10)
    proc = _start(cg, "exec sleep 30")
    _wait_for(lambda: len(cg.pids()) == 1)
    assert cg.memory_usage() is not None
    cg.destroy()
    proc.wait(timeout=10)
    assert not any(d.exists() for d in cg.dirs.values())
    assert cg.sandbox_id not in cgroups.existing_sandbox_ids()
    cg.destroy()  # already gone is fine
    with pytest.raises(SandboxNotFound):
        CgroupSet.attach(cg.sandbox_id)


def test_invalid_arguments() -> None:
    layout = Layout()
    for bad in ("", "../x", "a/b", ".hidden"):
        with pytest.raises(InvalidArgument):
            CgroupSet.create(bad, layout=layout)
    with pytest.raises(InvalidArgument):
        CgroupSet.create("ok", memory=10, layout=layout)
    with pytest.raises(InvalidArgument):
        CgroupSet.create("ok", pids=0, layout=layout)
    with pytest.raises(InvalidArgument):
        CgroupSet.create("ok", cpus=0.0, layout=layout)
    with pytest.raises(SetupError, match="memory cgroup controller is not available"):
        CgroupSet.create("ok", memory=64 * MiB, layout=layout)


def test_layout_detect_hybrid_and_v2(tmp_path: Path) -> None:
    hybrid = tmp_path / "hybrid"
    hybrid.write_text(
        "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n"
        "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n"
        "34 31 0:31 / /sys/fs/cgroup/cpuset rw - cgroup cgroup rw,cpuset\n"
        "35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n"
        "37 31 0:34 / /sys/fs/cgroup/freezer rw - cgroup cgroup rw,freezer\n"
        "40 31 0:37 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,name=systemd\n"
        "41 31 0:38 / /sys/fs/cgroup/unified rw shared:9 - cgroup2 cgroup2 rw\n"
    )
    layout = Layout.detect(hybrid)
    assert layout.v1 == {
        "cpu": Path("/sys/fs/cgroup/cpu,cpuacct"),
        "memory": Path("/sys/fs/cgroup/memory"),
        "freezer": Path("/sys/fs/cgroup/freezer"),
    }
    assert layout.v2 == Path("/sys/fs/cgroup/unified")
    pure = tmp_path / "pure"
    pure.write_text("30 23 0:26 / /sys/fs/cgroup rw shared:4 - cgroup2 cgroup2 rw,nsdelegate\n")
    assert Layout.detect(pure) == Layout(v1={}, v2=Path("/sys/fs/cgroup"))


@pytest.fixture
def v2_root(tmp_path: Path) -> Path:
    """A directory standing in for a pure cgroup v2 /sys/fs/cgroup."""
    (tmp_path / "cgroup.controllers").write_text("cpuset cpu io memory hugetlb pids rdma misc\n")
    (tmp_path / "cgroup.subtree_control").write_text("")
    return tmp_path


def test_v2_writes_go_to_the_unified_files(v2_root: Path) -> None:
    """Which files the v2 code writes, and what; the kernel's answers are checked by the
    `@host` tests above, which tests/vm runs on a pure v2 kernel."""
    layout = Layout(v2=v2_root)
    cg = CgroupSet.create("sb1", memory=64 * MiB, pids=50, cpus=0.5, layout=layout)
    d = v2_root / "rockroll" / "sb1"
    assert set(cg.dirs.values()) == {d}
    assert cg.procs_files() == [str(d / "cgroup.procs")]
    assert (v2_root / "cgroup.subtree_control").read_text() == "+cpu +memory +pids"
    assert (v2_root / "rockroll" / "cgroup.subtree_control").read_text() == "+cpu +memory +pids"
    assert (d / "memory.max").read_text() == str(64 * MiB)
    assert (d / "pids.max").read_text() == "50"
    assert (d / "cpu.max").read_text() == "50000 100000"

    assert not (d / "memory.swap.max").exists()  # written only where the kernel has it
    (d / "memory.swap.max").write_text("max")
    cg.set_limits(32 * MiB, None, None)
    assert (d / "memory.swap.max").read_text() == "0"
    assert (d / "memory.max").read_text() == str(32 * MiB)

    assert cgroups.existing_sandbox_ids(layout=layout) == {"sb1"}
    assert CgroupSet.attach("sb1", layout=layout).dirs == cg.dirs


def test_v2_already_enabled_controllers_are_left_alone(v2_root: Path) -> None:
    (v2_root / "cgroup.subtree_control").write_text("cpu memory pids\n")
    CgroupSet.create("sb2", pids=5, layout=Layout(v2=v2_root))
    assert (v2_root / "cgroup.subtree_control").read_text() == "cpu memory pids\n"


def test_v2_freeze_timeout_is_bounded(v2_root: Path) -> None:
    cg = CgroupSet.create("sb3", layout=Layout(v2=v2_root))
    (cg.dirs["freezer"] / "cgroup.events").write_text("populated 1\nfrozen 0\n")
    started = time.monotonic()
    with pytest.raises(cgroups.SandboxError, match="not frozen"):
        cg.freeze(timeout=0.2)
    assert time.monotonic() - started < 2
    assert (cg.dirs["freezer"] / "cgroup.freeze").read_text() == "0"  # thawed back


def test_v2_busy_root_explains_no_internal_processes(
    v2_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_open = open

    def busy_open(path: object, mode: str = "r", *a: object, **kw: object):  # type: ignore[no-untyped-def]
        if str(path).endswith("subtree_control") and "w" in mode:
            raise OSError(errno.EBUSY, "Device or resource busy")
        return real_open(path, mode, *a, **kw)  # type: ignore[call-overload]

    monkeypatch.setattr("builtins.open", busy_open)
    with pytest.raises(SetupError, match="no internal processes"):
        CgroupSet.create("sb4", memory=64 * MiB, layout=Layout(v2=v2_root))
    assert not (v2_root / "rockroll" / "sb4").exists()


def test_v2_missing_controller_is_setup_error(v2_root: Path) -> None:
    (v2_root / "cgroup.controllers").write_text("cpu io\n")
    with pytest.raises(SetupError, match="pids cgroup controller is not available"):
        CgroupSet.create("sb5", pids=5, layout=Layout(v2=v2_root))
