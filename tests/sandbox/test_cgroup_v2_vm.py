"""The sandbox on a kernel with the unified cgroup hierarchy only (Debian 12's default).

This machine is a v1/v2 hybrid, so tests/vm/runner.py boots Debian's own kernel under QEMU with
`cgroup_no_v1=all`, shares this checkout into it read-only, and runs the cgroup, isolation and
limit tests there (`runner.GUEST_TESTS`). These tests assert what came back: that the guest had
cgroup v2 alone, with the memory, pids and cpu controllers, and that every test inside ran and
passed: a memory hog OOM-killed, a fork bomb stopped, a CPU quota throttling, a disk full.

Where qemu, busybox or the kernel cannot be had, the tests skip, except under CI, where they
fail: the v2 proof must not pass by being absent.
"""

from __future__ import annotations

import contextlib
import xml.etree.ElementTree as ET
from collections.abc import Iterator

import pytest

from tests.paths import in_ci
from tests.vm import runner

pytestmark = pytest.mark.slow

# The tests inside whose passing is the point: each limit and kill path on the v2 kernel.
MUST_PASS = (
    "tests.sandbox.test_cgroups::test_limits_reach_the_kernel",
    "tests.sandbox.test_cgroups::test_memory_limit_oom_kills_inside_only",
    "tests.sandbox.test_cgroups::test_pids_limit_and_kill_all",
    "tests.sandbox.test_cgroups::test_cpu_quota_throttles",
    "tests.sandbox.test_cgroups::test_a_sandboxs_cpu_quota_holds_its_commands",
    "tests.sandbox.test_cgroups::test_freeze_and_thaw",
    "tests.sandbox.test_isolation::test_memory_hog_is_killed_at_its_limit",
    "tests.sandbox.test_isolation::test_fork_bomb_stops_at_pids_limit",
    "tests.security.test_disk::test_writes_past_the_disk_limit_fail_with_enospc",
    "tests.security.test_timeouts::test_a_double_forked_daemon_is_dead_after_the_timeout",
)


@pytest.fixture(scope="module")
def vm(request: pytest.FixtureRequest) -> Iterator[runner.Result]:
    """One VM run for the module, its progress shown on the terminal as it goes."""
    capture = request.config.pluginmanager.getplugin("capturemanager")
    shown = capture.global_and_fixture_disabled() if capture else contextlib.nullcontext()
    with shown:
        print(flush=True)
        try:
            result = runner.run()
        except runner.VMUnavailable as e:
            if in_ci():
                pytest.fail(f"CI needs the cgroup v2 VM: {e}", pytrace=False)
            pytest.skip(f"the cgroup v2 VM cannot run here: {e}")
        print(
            f"[vm-host] {result.accel}: /init at {result.boot_seconds}s of guest uptime, "
            f"pytest done at {result.guest_seconds}s, {result.wall_seconds:.0f}s in all",
            flush=True,
        )
    yield result


def _where(result: runner.Result) -> str:
    notes = "".join(f"\n{n}" for n in result.notes)
    return f"guest console log: {result.console}; guest output: {result.out}{notes}"


def test_the_guest_had_cgroup_v2_only(vm: runner.Result) -> None:
    assert vm.read("uname"), _where(vm)
    # The kernel's account of pytest's cgroups inside: one line, the unified hierarchy's.
    lines = vm.read("proc_self_cgroup").splitlines()
    assert len(lines) == 1 and lines[0].startswith("0::/"), (lines, _where(vm))
    assert {"memory", "pids", "cpu"} <= set(vm.read("cgroup_controllers").split())
    fstypes = {
        (line.split(" - ")[1].split()[0], line.split()[4])
        for line in vm.read("mountinfo").splitlines()
        if " - cgroup" in line
    }
    assert fstypes == {("cgroup2", "/sys/fs/cgroup")}, fstypes


def test_the_isolation_and_limit_tests_pass_inside(vm: runner.Result) -> None:
    junit = vm.out / "junit.xml"
    assert junit.exists(), f"the guest wrote no report (status {vm.status}); {_where(vm)}"
    suite = ET.parse(junit).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    assert suite is not None
    outcomes: dict[str, str] = {}
    for case in suite.iter("testcase"):
        name = f"{case.get('classname')}::{case.get('name')}"
        bad = [c.tag for c in case if c.tag in ("failure", "error", "skipped")]
        outcomes[name] = bad[0] if bad else "passed"
    not_passed = {k: v for k, v in outcomes.items() if v != "passed"}
    assert not not_passed, f"{not_passed}; {_where(vm)}"
    assert vm.status == 0, _where(vm)
    missing = [t for t in MUST_PASS if outcomes.get(t) != "passed"]
    assert not missing, f"did not run inside: {missing}; {_where(vm)}"
    # Every test collected for the guest on the host ran there, and nothing else.
    expected = {_junit_name(node) for node in vm.expected}
    assert len(expected) > len(MUST_PASS) and set(outcomes) == expected, (expected, outcomes)


def _junit_name(node_id: str) -> str:
    """tests/a/test_b.py::test_c[x] as the JUnit report names it: tests.a.test_b::test_c[x]."""
    path, _, name = node_id.partition("::")
    return f"{path.removesuffix('.py').replace('/', '.')}::{name}"
