"""The podman backend behaves like bwrap: same SDK, same isolation, nothing left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from rockroll import Sandbox
from rockroll.errors import SetupError
from rockroll.sandbox import podman
from rockroll.sandbox.idmap import id_base
from rockroll.sandbox.mounts import mounts_under
from rockroll.sandbox.podman import GLOBAL_ARGS, PodmanBackend
from rockroll.sandbox.records import sandboxes_dir
from rockroll.sandbox.runtime import local_runtime
from tests.prereqs import require_programs
from tests.sandbox.probes import FORK_COUNTER, SECCOMP_PROBE, cap_names, sandbox_caps_mask

pytestmark = [
    pytest.mark.slow,
    require_programs("podman", "runc", install="apt-get install podman runc"),
]


def containers(sandbox_id: str) -> list[str]:
    out = subprocess.run(
        ["podman", *GLOBAL_ARGS, "ps", "--all", "--format", "{{.Names}}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [name for name in out.split() if name == f"rockroll-{sandbox_id}"]


@pytest.fixture
def psb(base_image: str) -> Iterator[Sandbox]:
    with Sandbox.create(base_image, backend="podman", memory="512m", pids=256) as sb:
        yield sb


def test_exec_codes_and_streams(psb: Sandbox) -> None:
    res = psb.exec("echo out; echo err >&2; exit 3")
    assert (res.exit_code, res.stdout, res.stderr) == (3, "out\n", "err\n")
    assert psb.exec(["printf", "%s", "a b"]).stdout == "a b"
    assert psb.exec("hostname").stdout == "sandbox\n"
    assert containers(psb.id) == [f"rockroll-{psb.id}"]


def test_root_is_unprivileged_on_the_host_and_seccomp_applies(psb: Sandbox) -> None:
    res = psb.exec("grep -E '^Cap(Prm|Eff|Bnd)' /proc/self/status; cat /proc/self/uid_map")
    lines = res.stdout.split()
    assert lines[1:6:2] == [sandbox_caps_mask()] * 3, [cap_names(m) for m in lines[1:6:2]]
    assert lines[6:9] == ["0", str(id_base()), "65536"], res.stdout
    assert id_base() >= 65536
    # calls that need no privilege at all, refused: only the filter can have done it
    res = psb.exec(["python3", "-c", SECCOMP_PROBE])
    assert res.stdout.split("\n")[:3] == ["seccomp 2", "ptrace EPERM", "unshare EPERM"], res


def test_network_is_loopback_only(psb: Sandbox, host_server: int) -> None:
    probe = f"""
import urllib.request
try:
    print(urllib.request.urlopen("http://127.0.0.1:{host_server}", timeout=2).read())
except Exception as e:
    print("refused", type(e).__name__)
print(open("/proc/net/dev").read())
"""
    res = psb.exec(["python3", "-c", probe], timeout=30)
    assert "host server reached" not in res.stdout and "refused" in res.stdout
    devices = [ln.split(":")[0].strip() for ln in res.stdout.splitlines() if ":" in ln]
    assert devices == ["lo"], res.stdout


def host_cgroup(sb: Sandbox, controller: str) -> Path:
    """The host's directory of the container's cgroup for `controller` (cgroup v1)."""
    for line in sb.exec("cat /proc/self/cgroup").stdout.splitlines():
        _, names, path = line.split(":", 2)
        if controller in names.split(","):
            return Path("/sys/fs/cgroup") / controller / path.lstrip("/")
    raise AssertionError(f"no {controller} cgroup")


def test_memory_hog_is_killed_at_its_limit(base_image: str) -> None:
    with Sandbox.create(base_image, backend="podman", memory="64m") as hog:
        memory = host_cgroup(hog, "memory")
        assert int((memory / "memory.limit_in_bytes").read_text()) == 64 << 20
        res = hog.exec("python3 -c 'a = bytearray(300 << 20); print(len(a))'", timeout=60)
        assert (res.exit_code, res.timed_out, res.stdout) == (137, False, ""), res
        oom = dict(ln.split() for ln in (memory / "memory.oom_control").read_text().splitlines())
        assert int(oom["oom_kill"]) >= 1, oom  # the kernel's OOM kill, at the cgroup's limit
        assert hog.exec("echo still usable").stdout == "still usable\n"


def test_fork_bomb_stops_at_pids_limit(base_image: str) -> None:
    with Sandbox.create(base_image, backend="podman", pids=64) as bomb:
        pids = host_cgroup(bomb, "pids")
        assert (pids / "pids.max").read_text() == "64\n"

        def refused() -> int:
            return int((pids / "pids.events").read_text().split()[1])  # "max N"

        before = refused()
        res = bomb.exec(["python3", "-c", FORK_COUNTER], timeout=60)
        assert res.exit_code == 0, res
        made, failure = res.stdout.split()
        assert failure == "EAGAIN" and 64 - 8 <= int(made) < 64, res
        assert refused() > before, "the pids cgroup refused no fork"
        assert bomb.exec("echo alive").stdout == "alive\n"


def test_session_keeps_state(psb: Sandbox) -> None:
    with psb.session() as sh:
        assert sh.run("cd /tmp && export FOO=bar").exit_code == 0
        assert sh.run('echo "$FOO $(pwd)"').stdout == "bar /tmp\n"
        assert sh.run("sleep 100", timeout=1).timed_out
        assert sh.run("echo alive").stdout == "alive\n"


def test_files_land_in_the_overlay(psb: Sandbox) -> None:
    psb.write_bytes("/data/bin.dat", bytes(range(256)))
    assert psb.exec("od -An -tu1 -N3 /data/bin.dat").stdout.split() == ["0", "1", "2"]
    assert psb.exec("echo inside > /made-inside").exit_code == 0
    assert psb.read_text("/made-inside") == "inside\n"
    upper = Path(psb.upper_layer())
    assert (upper / "made-inside").read_text() == "inside\n"
    assert (upper / "made-inside").stat().st_uid == 0  # stored unshifted


def test_snapshot_and_fork(psb: Sandbox) -> None:
    psb.write_text("/state", "v1")
    snap = psb.snapshot()
    try:
        psb.write_text("/state", "v2-parent")
        assert psb.exec("echo running").stdout == "running\n"
        with snap.fork() as child:
            assert child.spec.backend == "podman"
            assert child.exec("cat /state").stdout == "v1"
            child.write_text("/state", "v3-child")
            assert psb.read_text("/state") == "v2-parent"
            with child.fork() as grandchild:
                assert grandchild.exec("cat /state").stdout == "v3-child"
    finally:
        snap.remove()


def test_timeout_kills_a_command_that_ignores_sigterm(psb: Sandbox) -> None:
    res = psb.exec("trap '' TERM; sleep 100 & echo started; sleep 100; wait", timeout=5)
    assert res.stdout == "started\n", res  # past the trap, the background job started
    assert res.timed_out and res.duration < 30  # not the command's 100 s (generous: loaded host)
    assert "sleep 100" not in psb.exec("ps -e -o args=").stdout


def test_close_leaves_no_container(base_image: str) -> None:
    sb = Sandbox.create(base_image, backend="podman")
    assert PodmanBackend().running(sb.record)
    assert sb.id not in PodmanBackend().leftovers(set()), "its directory still exists"
    sb.close()
    assert containers(sb.id) == []
    assert not sb.record.dir.exists()
    assert not PodmanBackend().running(sb.record)
    PodmanBackend().destroy(sb.record)


OWNER = """
import time
from rockroll import Sandbox
sb = Sandbox.create("base", backend="podman")
sb.exec("sleep 1001 &")
print(sb.id, flush=True)
time.sleep(1000)
"""


def test_gc_removes_the_container_of_a_killed_owner(base_image: str) -> None:
    owner = subprocess.Popen([sys.executable, "-c", OWNER], stdout=subprocess.PIPE, text=True)
    assert owner.stdout is not None
    sandbox_id = owner.stdout.readline().strip()
    assert sandbox_id, "owner did not create a sandbox"
    os.kill(owner.pid, signal.SIGKILL)
    owner.wait()
    assert containers(sandbox_id), "the container should outlive its owner until gc"
    report = local_runtime().gc()
    assert sandbox_id in report.sandboxes
    assert containers(sandbox_id) == []
    sbdir = sandboxes_dir() / sandbox_id
    assert not sbdir.exists() and not mounts_under(sbdir)
    ps = subprocess.run(["ps", "-eo", "args="], capture_output=True, text=True).stdout
    assert "sleep 1001" not in ps


def test_a_failed_start_explains_and_cleans_up(
    base_image: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(podman, "NPROC", 1 << 30)
    with pytest.raises(SetupError, match=r"rlimit.*CAP_SYS_RESOURCE") as failed:
        Sandbox.create(base_image, backend="podman")
    sandbox_id = str(failed.value).split()[1]
    assert containers(sandbox_id) == []
    assert not (sandboxes_dir() / sandbox_id).exists()


def test_a_container_without_its_directory_is_a_leftover(base_image: str) -> None:
    with Sandbox.create(base_image, backend="podman") as sb:
        moved = sb.record.dir.with_name(f".moved-{sb.id}")
        os.rename(sb.record.dir, moved)
        try:
            assert sb.id in PodmanBackend().leftovers(set())
            assert sb.id not in PodmanBackend().leftovers({sb.id})
        finally:
            os.rename(moved, sb.record.dir)
