"""What a process inside a sandbox can and cannot reach, checked against real sandboxes."""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import pytest

from rockroll import Sandbox
from rockroll.sandbox.bwrap import SANDBOX_CAPS
from rockroll.sandbox.images import get_image
from rockroll.sandbox.runtime import local_runtime
from tests.sandbox.probes import FORK_COUNTER


def test_host_processes_are_invisible(sandbox: Sandbox) -> None:
    res = sandbox.exec("ps -e -o comm= | sort | tr '\\n' ' '; cat /proc/*/cmdline | tr '\\0' ' '")
    assert res.exit_code == 0
    assert "pytest" not in res.stdout
    assert int(sandbox.exec("ps -e --no-headers | wc -l").stdout) < 8


def test_host_files_are_invisible(sandbox: Sandbox, tmp_path: Path) -> None:
    secret = Path("/tmp") / f"rockroll-secret-{uuid.uuid4().hex}"
    secret.write_text("host secret")
    try:
        res = sandbox.exec(f"cat {secret}; ls /work /root/.cache/rockroll 2>&1; cat /etc/hostname")
        assert "host secret" not in res.stdout
        assert "No such file" in res.stdout + res.stderr
        assert res.stdout.strip().endswith("sandbox")
    finally:
        secret.unlink()


def test_writes_land_only_in_the_overlay(base_image: str) -> None:
    rootfs = get_image(base_image).rootfs
    with Sandbox.create(base_image) as a, Sandbox.create(base_image) as b:
        assert a.exec("echo changed > /etc/motd-test && rm /etc/hostname").exit_code == 0
        assert not (rootfs / "etc/motd-test").exists()
        assert (rootfs / "etc/hostname").exists()
        upper = Path(local_runtime().upper(a._rec))
        assert (upper / "etc/motd-test").exists()
        assert (upper / "etc/motd-test").stat().st_uid == 0  # stored unshifted, like an image
        assert b.exec("cat /etc/motd-test").exit_code != 0
        assert b.exec("cat /etc/hostname").stdout.strip() == "sandbox"


CAP_BITS = {
    "CAP_CHOWN": 0, "CAP_DAC_OVERRIDE": 1, "CAP_FOWNER": 3, "CAP_FSETID": 4, "CAP_KILL": 5,
    "CAP_SETGID": 6, "CAP_SETUID": 7, "CAP_SETPCAP": 8, "CAP_NET_BIND_SERVICE": 10,
    "CAP_SYS_CHROOT": 18, "CAP_MKNOD": 27, "CAP_AUDIT_WRITE": 29, "CAP_SETFCAP": 31,
}  # fmt: skip


def sandbox_caps_mask() -> str:
    return f"{sum(1 << CAP_BITS[c] for c in SANDBOX_CAPS):016x}"


def test_root_holds_dockers_capabilities_only_in_its_user_namespace(sandbox: Sandbox) -> None:
    res = sandbox.exec("grep -E '^Cap(Prm|Eff|Bnd)' /proc/self/status; cat /proc/self/uid_map")
    lines = res.stdout.split("\n")
    assert [ln.split()[1] for ln in lines[:3]] == [sandbox_caps_mask()] * 3, res.stdout
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
print(open("/proc/net/dev").read())
"""
    res = sandbox.exec(["python3", "-c", probe], timeout=30)
    assert "host server reached" not in res.stdout
    assert "host loopback refused" in res.stdout
    assert "no route" in res.stdout and "routes: []" in res.stdout, res.stdout
    assert "eth" not in res.stdout and "lo:" in res.stdout


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
        res = hog.exec("python3 -c 'a = bytearray(300 << 20); print(len(a))'", timeout=60)
        assert res.exit_code == 137, res
        assert other.exec("echo alive").stdout == "alive\n"
        assert hog.exec("echo still usable").stdout == "still usable\n"


@pytest.mark.slow
def test_fork_bomb_stops_at_pids_limit(base_image: str) -> None:
    with Sandbox.create(base_image, pids=64) as bomb, Sandbox.create(base_image) as other:
        res = bomb.exec(["python3", "-c", FORK_COUNTER], timeout=60)
        assert res.exit_code == 0, res
        assert 20 < int(res.stdout) < 64
        assert other.exec("echo alive").stdout == "alive\n"
        res = bomb.exec("bomb() { bomb | bomb & }; bomb", timeout=3)
        assert other.exec("echo alive").stdout == "alive\n"
    assert Path("/proc/self").exists()


def test_seccomp_refuses_dangerous_calls(sandbox: Sandbox) -> None:
    probe = """
import ctypes, errno, os, socket
libc = ctypes.CDLL(None, use_errno=True)
def err(rc):
    return errno.errorcode.get(ctypes.get_errno(), "?") if rc != 0 else "ALLOWED"
print("mount", err(libc.mount(b"none", b"/mnt", b"tmpfs", 0, None)))
print("unshare", err(libc.unshare(0x10000000)))
print("ptrace", err(libc.ptrace(0, 0, 0, 0)))
try:
    socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP); print("raw ALLOWED")
except OSError as e:
    print("raw", errno.errorcode[e.errno])
"""
    res = sandbox.exec(["python3", "-c", probe])
    assert res.exit_code == 0, res
    for line in res.stdout.strip().split("\n"):
        assert "ALLOWED" not in line, res.stdout
    assert "mount EPERM" in res.stdout


def test_timeout_kills_a_command_that_ignores_sigterm(sandbox: Sandbox) -> None:
    res = sandbox.exec("trap '' TERM; sleep 100 & sleep 100; wait", timeout=1)
    assert res.timed_out
    assert res.duration < 4
    assert "sleep 100" not in sandbox.exec("ps -e -o args=").stdout


def test_many_sandboxes_are_independent(base_image: str) -> None:
    sbs = [Sandbox.create(base_image) for _ in range(5)]
    try:
        for i, sb in enumerate(sbs):
            sb.write_text("/id", str(i))
        assert [sb.exec("cat /id").stdout for sb in sbs] == [str(i) for i in range(5)]
    finally:
        for sb in sbs:
            sb.close()
    assert all(not sb._rec.dir.exists() for sb in sbs)
    assert os.path.exists("/proc/self")


def test_full_network_only_when_asked(base_image: str, host_server: int) -> None:
    fetch = f"curl -s -m 3 http://127.0.0.1:{host_server}/"
    with Sandbox.create(base_image, network="full") as sb:
        assert sb.exec(fetch, timeout=10).stdout == "host server reached"
    with Sandbox.create(base_image) as sb:
        assert sb.exec(fetch, timeout=10).stdout == ""


def test_sandboxed_root_cannot_kill_the_init(sandbox: Sandbox) -> None:
    res = sandbox.exec("ps -e -o pid=,comm= | head -1; kill -9 1; kill -9 -1; true")
    assert res.stdout.split() == ["1", "rockroll-init"]
    assert sandbox.exec("echo still alive").stdout == "still alive\n"
