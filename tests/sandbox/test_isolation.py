"""What a process inside a sandbox can and cannot reach, checked against real sandboxes."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from rockroll import Sandbox
from rockroll.sandbox.cgroups import CgroupSet, existing_sandbox_ids
from rockroll.sandbox.images import get_image
from rockroll.sandbox.paths import rockroll_home
from rockroll.sandbox.records import load_record
from tests.sandbox.probes import (
    DOCKER_DEFAULT_MASK,
    FORK_COUNTER,
    SECCOMP_PROBE,
    cap_names,
    sandbox_caps_mask,
)

REPO = Path(__file__).resolve().parents[2]


def cgroup_of(sb: Sandbox) -> CgroupSet:
    """The host's cgroups of a sandbox (named by the launcher that started it)."""
    rec = load_record(sb.id)
    assert rec is not None and rec.cgroup, rec
    return CgroupSet.attach(rec.cgroup)


def test_host_processes_are_invisible(sandbox: Sandbox) -> None:
    res = sandbox.exec("ps -e -o comm= | sort | tr '\\n' ' '; cat /proc/*/cmdline | tr '\\0' ' '")
    assert res.exit_code == 0
    assert "pytest" not in res.stdout
    assert int(sandbox.exec("ps -e --no-headers | wc -l").stdout) < 8


def test_host_files_are_invisible(sandbox: Sandbox, tmp_path: Path) -> None:
    secret = Path("/tmp") / f"rockroll-secret-{uuid.uuid4().hex}"
    secret.write_text("host secret")
    try:
        res = sandbox.exec(["cat", str(secret)])
        assert res.exit_code == 1 and "No such file" in res.stderr, res
        assert "host secret" not in res.stdout
        # each of these exists on the host (the control) and not inside
        for path in (REPO, rockroll_home(), Path("/root/.cache")):
            assert path.exists(), path
            res = sandbox.exec(["ls", "-d", str(path)])
            assert res.exit_code == 2 and "No such file" in res.stderr, (path, res)
        assert sandbox.exec("cat /etc/hostname").stdout == "sandbox\n"
    finally:
        secret.unlink()


def test_writes_land_only_in_the_overlay(base_image: str) -> None:
    rootfs = get_image(base_image).rootfs
    with Sandbox.create(base_image) as a, Sandbox.create(base_image) as b:
        assert a.exec("echo changed > /etc/motd-test && rm /etc/hostname").exit_code == 0
        assert not (rootfs / "etc/motd-test").exists()
        assert (rootfs / "etc/hostname").exists()
        upper = Path(a.upper_layer())
        assert (upper / "etc/motd-test").exists()
        assert (upper / "etc/motd-test").stat().st_uid == 0  # stored unshifted, like an image
        assert b.exec("cat /etc/motd-test").exit_code != 0
        assert b.exec("cat /etc/hostname").stdout.strip() == "sandbox"


def test_root_holds_dockers_capabilities_only_in_its_user_namespace(sandbox: Sandbox) -> None:
    # Docker's mask (as `docker run` shows it) without CAP_NET_RAW (bit 13): written out here,
    # not taken from the code under test
    expected = f"{int(DOCKER_DEFAULT_MASK, 16) & ~(1 << 13):016x}"
    assert expected == sandbox_caps_mask() == "00000000a80405fb"
    res = sandbox.exec("grep -E '^Cap(Prm|Eff|Bnd)' /proc/self/status; cat /proc/self/uid_map")
    lines = res.stdout.split("\n")
    masks = [ln.split()[1] for ln in lines[:3]]
    assert masks == [expected] * 3, [cap_names(m) for m in masks]
    inside, outside, count = map(int, lines[3].split())
    assert (inside, count) == (0, 65536) and outside >= 65536, res.stdout
    # a user other than root holds none
    res = sandbox.exec(["setpriv", "--reuid=1000", "--regid=1000", "--clear-groups", "grep",
                        "CapEff", "/proc/self/status"])  # fmt: skip
    assert res.stdout.split()[1] == "0" * 16, res


def test_network_is_loopback_only(sandbox: Sandbox, host_server: int) -> None:
    host_address = _host_address()
    probe = f"""
import socket, urllib.request
try:
    print(urllib.request.urlopen("http://127.0.0.1:{host_server}", timeout=2).read())
except Exception as e:
    print("host loopback refused:", type(e).__name__)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
try:  # routing only, no packet: which way would a packet to the host's own address go?
    s.connect(("{host_address}", 9)); print("routed via", s.getsockname()[0])
except OSError as e:
    print("no route", e.errno)
print("routes:", open("/proc/net/route").read().splitlines()[1:])
print("devices:", [ln.split(":")[0].strip() for ln in open("/proc/net/dev").readlines()[2:]])
"""
    res = sandbox.exec(["python3", "-c", probe], timeout=30)
    assert "host server reached" not in res.stdout
    assert "host loopback refused" in res.stdout
    assert "no route" in res.stdout and "routes: []" in res.stdout, res.stdout
    assert "devices: ['lo']" in res.stdout, res.stdout


def _host_address() -> str:
    """An address of this host that is not loopback (the first of `hostname -I`), else a
    documentation address (RFC 5737): never contacted, only routed."""
    out = subprocess.run(["hostname", "-I"], capture_output=True, text=True).stdout.split()
    return next((a for a in out if "." in a and not a.startswith("127.")), "192.0.2.1")


def test_loopback_inside_works(sandbox: Sandbox) -> None:
    script = (
        "python3 -m http.server 8123 --bind 127.0.0.1 >/dev/null 2>&1 & "
        "for i in $(seq 50); do curl -s -o /dev/null -w '%{http_code}' "
        "http://127.0.0.1:8123/ && break; sleep 0.1; done"
    )
    assert sandbox.exec(script, timeout=30).stdout.strip().endswith("200")


@pytest.mark.slow
def test_memory_hog_is_killed_at_its_limit(base_image: str) -> None:
    with Sandbox.create(base_image, memory="64m") as hog, Sandbox.create(base_image) as other:
        kills_before = cgroup_of(hog).oom_kill_count() or 0
        res = hog.exec("python3 -c 'a = bytearray(300 << 20); print(len(a))'", timeout=60)
        assert (res.exit_code, res.timed_out, res.stdout) == (137, False, ""), res
        assert (cgroup_of(hog).oom_kill_count() or 0) > kills_before  # the kernel's OOM kill
        assert other.exec("echo alive").stdout == "alive\n"
        assert hog.exec("echo still usable").stdout == "still usable\n"


def _pids_file(sb: Sandbox, name: str) -> str:
    return (cgroup_of(sb).dirs["pids"] / name).read_text().strip()


def _limit_hits(sb: Sandbox) -> int:
    """How many forks the pids cgroup refused (`max N` of pids.events)."""
    return int(dict(ln.split() for ln in _pids_file(sb, "pids.events").splitlines())["max"])


@pytest.mark.slow
def test_fork_bomb_stops_at_pids_limit(base_image: str) -> None:
    with Sandbox.create(base_image, pids=64) as bomb, Sandbox.create(base_image) as other:
        assert _pids_file(bomb, "pids.max") == "64"
        hits = _limit_hits(bomb)
        res = bomb.exec(["python3", "-c", FORK_COUNTER], timeout=60)
        assert res.exit_code == 0, res
        made, failure = res.stdout.split()
        # fork failed with EAGAIN once the sandbox held 64 processes: the few already there
        # (the init, the command's python) and the children
        assert failure == "EAGAIN", res
        assert 64 - 8 <= int(made) < 64, made
        assert _limit_hits(bomb) > hits, "the pids cgroup refused no fork"
        # the control: a sandbox with the default limit forks past 64 without failing
        res = other.exec(["python3", "-c", FORK_COUNTER.replace("100000", "200")], timeout=60)
        assert res.stdout.split() == ["200", "none"], res

        # the classic bomb: it fills the sandbox to its limit and no further, the host and the
        # other sandbox are unaffected, and killing it gives back a working sandbox
        hits = _limit_hits(bomb)
        bomb.exec("bomb() { bomb | bomb & }; bomb", timeout=10)
        deadline = time.monotonic() + 60
        while _limit_hits(bomb) == hits:
            assert time.monotonic() < deadline, "the bomb never reached the pids limit"
            time.sleep(0.1)
        assert int(_pids_file(bomb, "pids.current")) <= 64
        assert other.exec("echo alive").stdout == "alive\n"
        assert bomb.kill_all() == 0
        res = bomb.exec("echo alive; ps -e -o comm=")  # the shell execs ps, its last command
        assert res.stdout.split() == ["alive", "rockroll-init", "ps"], res


def test_seccomp_refuses_dangerous_calls(sandbox: Sandbox) -> None:
    # the control: outside, the same unprivileged calls are allowed
    host = subprocess.run([sys.executable, "-c", SECCOMP_PROBE], capture_output=True, text=True)
    assert host.stdout.split("\n")[1:3] == ["ptrace ALLOWED", "unshare ALLOWED"], host
    res = sandbox.exec(["python3", "-c", SECCOMP_PROBE])
    assert res.stdout.split("\n")[:3] == ["seccomp 2", "ptrace EPERM", "unshare EPERM"], res
    probe = """
import ctypes, errno, socket
libc = ctypes.CDLL(None, use_errno=True)
print("mount", errno.errorcode[ctypes.get_errno()] if libc.mount(b"none", b"/mnt", b"tmpfs",
      0, None) else "ALLOWED")
try:
    socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP); print("raw ALLOWED")
except OSError as e:
    print("raw", errno.errorcode[e.errno])
"""
    res = sandbox.exec(["python3", "-c", probe])
    assert res.stdout.split("\n")[:2] == ["mount EPERM", "raw EPERM"], res


def test_timeout_kills_a_command_that_ignores_sigterm(sandbox: Sandbox) -> None:
    res = sandbox.exec("trap '' TERM; sleep 100 & echo started; sleep 100; wait", timeout=5)
    assert res.timed_out and res.exit_code == 137 and res.stdout == "started\n", res
    assert res.duration < 30  # far from the 100 s the command would take (a loaded host: generous)
    assert "sleep 100" not in sandbox.exec("ps -e -o args=").stdout


def test_many_sandboxes_are_independent(base_image: str) -> None:
    nap = f"300.{uuid.uuid4().int % 10**9}"  # a command line no other test runs
    sbs = [Sandbox.create(base_image) for _ in range(5)]
    try:
        cgroups = [cgroup_of(sb).sandbox_id for sb in sbs]
        assert len(set(cgroups)) == 5 and set(cgroups) <= existing_sandbox_ids()
        for i, sb in enumerate(sbs):
            sb.exec(f"echo {i} > /id; sleep {nap} >/dev/null 2>&1 &")
        assert [sb.exec("cat /id").stdout for sb in sbs] == [f"{i}\n" for i in range(5)]
        assert [sb.read_text("/id") for sb in sbs] == [f"{i}\n" for i in range(5)]
    finally:
        for sb in sbs:
            sb.close()
    # closing removed each one's record, directory, cgroups and processes
    assert [load_record(sb.id) for sb in sbs] == [None] * 5
    assert not set(cgroups) & existing_sandbox_ids()
    ps = subprocess.run(["ps", "-eo", "args="], capture_output=True, text=True).stdout
    assert f"sleep {nap}" not in ps.split("\n")


def test_full_network_only_when_asked(base_image: str, host_server: int) -> None:
    fetch = f"curl -s -m 3 http://127.0.0.1:{host_server}/"
    with Sandbox.create(base_image, network="full") as sb:
        assert sb.exec(fetch, timeout=10).stdout == "host server reached"
    with Sandbox.create(base_image) as sb:
        res = sb.exec(fetch, timeout=10)
        assert res.stdout == "" and res.exit_code == 7, res  # curl: could not connect


def test_sandboxed_root_cannot_kill_the_init(sandbox: Sandbox) -> None:
    res = sandbox.exec("ps -e -o pid=,comm= | head -1; kill -9 1; kill -9 -1; true")
    assert res.stdout.split() == ["1", "rockroll-init"]
    assert sandbox.exec("echo still alive").stdout == "still alive\n"
