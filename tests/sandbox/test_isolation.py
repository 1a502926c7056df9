"""What a process inside a sandbox can and cannot reach, checked against real sandboxes."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from rockroll import Sandbox
from rockroll.sandbox.images import get_image
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
        assert (a._rec.dir / "upper/etc/motd-test").exists()
        assert b.exec("cat /etc/motd-test").exit_code != 0
        assert b.exec("cat /etc/hostname").stdout.strip() == "sandbox"


def test_capabilities_are_zero(sandbox: Sandbox) -> None:
    res = sandbox.exec("grep -E '^Cap(Inh|Prm|Eff|Bnd|Amb)' /proc/self/status")
    lines = res.stdout.split("\n")
    assert len([ln for ln in lines if ln.strip()]) == 5
    for line in filter(None, lines):
        assert line.split()[1] == "0000000000000000", line


def test_network_is_loopback_only(sandbox: Sandbox, host_server: int) -> None:
    probe = f"""
import socket, urllib.request
try:
    print(urllib.request.urlopen("http://127.0.0.1:{host_server}", timeout=2).read())
except Exception as e:
    print("host loopback refused:", type(e).__name__)
for addr in ("8.8.8.8", "10.0.0.1", "192.168.1.1"):
    s = socket.socket()
    s.settimeout(2)
    try:
        s.connect((addr, 80)); print("reached", addr)
    except OSError as e:
        print("refused", addr, e.errno)
print(open("/proc/net/dev").read())
"""
    res = sandbox.exec(["python3", "-c", probe], timeout=30)
    assert "host server reached" not in res.stdout
    assert "host loopback refused" in res.stdout
    assert "reached" not in res.stdout.replace("host server reached", "")
    assert "eth" not in res.stdout and "lo:" in res.stdout


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
