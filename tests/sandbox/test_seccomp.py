"""The seccomp policy, checked by running real processes under bwrap with the compiled filter."""

from __future__ import annotations

import errno
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import textwrap

import pyseccomp  # a dependency of rockroll itself
import pytest

from rockroll.errors import SetupError
from rockroll.sandbox import seccomp
from rockroll.sandbox.images import get_image
from tests.prereqs import require_programs

BWRAP = shutil.which("bwrap")
# The venv lives under /tmp, which the sandbox hides behind a tmpfs; use the real interpreter.
PYTHON = os.path.realpath(sys.executable)

# Runs inside the sandbox. Each probe calls the syscall with arguments the kernel would reject
# with something other than EPERM (or accept), so EPERM can only come from the filter.
PROBE = textwrap.dedent(
    r"""
    import ctypes, json, os, socket, subprocess, sys, threading
    nr = json.loads(sys.argv[1])
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    out = {}

    def call(name, fn):
        ctypes.set_errno(0)
        try:
            ret = fn()
        except OSError as e:
            out[name] = e.errno
            return
        out[name] = ctypes.get_errno() if ret == -1 else 0

    def sys_(name, *args):
        return libc.syscall(ctypes.c_long(nr[name]), *[ctypes.c_long(a) for a in args])

    def in_child(fn):
        # in a child, so namespace changes do not leak into later probes
        pid = os.fork()
        if pid == 0:
            ctypes.set_errno(0)
            ret = fn()
            os._exit(ctypes.get_errno() if ret == -1 else 0)
        code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
        if code:
            ctypes.set_errno(code)
            return -1
        return 0

    def clone(flags):
        ret = sys_("clone", flags | 17, 0, 0, 0, 0)  # 17 = SIGCHLD
        if ret == 0:
            os._exit(0)
        if ret > 0:
            os.waitpid(ret, 0)
        return ret

    os.makedirs("/tmp/m")
    call("mount", lambda: libc.mount(b"none", b"/tmp/m", b"tmpfs", 0, None))
    call("unshare", lambda: in_child(lambda: libc.unshare(0x10000000)))
    call("setns", lambda: libc.setns(os.open("/proc/self/ns/net", os.O_RDONLY), 0))
    call("ptrace", lambda: sys_("ptrace", 0xDEAD, os.getpid(), 0, 0))
    call("keyctl", lambda: sys_("keyctl", 9999, 0, 0, 0, 0))
    call("bpf", lambda: sys_("bpf", 9999, 0, 0))
    call("init_module", lambda: sys_("init_module", 0, 0, 0))
    call("clone_newuser", lambda: clone(0x10000000))
    call("clone_newnet", lambda: clone(0x40000000))
    call("clone3", lambda: sys_("clone3", 0, 0))
    call("raw_socket", lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW, 1).close())
    call(
        "raw_socket_flags",
        lambda: socket.socket(
            socket.AF_INET, socket.SOCK_RAW | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC, 1
        ).close(),
    )
    call("packet_socket", lambda: socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, 0).close())
    unshare = subprocess.run(["unshare", "-U", "true"], capture_output=True)
    out["unshare_binary"] = unshare.returncode

    box = []
    t = threading.Thread(target=lambda: box.append(1))
    t.start()
    t.join()
    out["thread"] = box == [1]
    pid = os.fork()
    if pid == 0:
        os._exit(7)
    out["fork"] = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 7
    proc = subprocess.run(["/bin/sh", "-c", "echo ok"], capture_output=True, text=True)
    out["subprocess"] = proc.stdout == "ok\n"
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        with socket.create_connection(s.getsockname()) as c:
            c.sendall(b"hi")
            conn, _ = s.accept()
            out["tcp"] = conn.recv(2) == b"hi"
            conn.close()
    a, b = socket.socketpair(socket.AF_UNIX)
    a.sendall(b"x")
    out["unix"] = b.recv(1) == b"x"
    with open("/tmp/f", "w") as f:
        f.write("data")
    out["tmp_write"] = open("/tmp/f").read() == "data"
    print(json.dumps(out))
    """
)

DENIED_PROBES = {
    "mount": errno.EPERM,
    "unshare": errno.EPERM,
    "setns": errno.EPERM,
    "ptrace": errno.EPERM,
    "keyctl": errno.EPERM,
    "bpf": errno.EPERM,
    "init_module": errno.EPERM,
    "clone_newuser": errno.EPERM,
    "clone_newnet": errno.EPERM,
    "clone3": errno.ENOSYS,
    "raw_socket": errno.EPERM,
    "raw_socket_flags": errno.EPERM,
    "packet_socket": errno.EPERM,
}
# Probes whose result without the filter (but with capabilities) is not EPERM on any kernel we
# target, so that EPERM under the filter proves the filter did it. bpf and init_module need
# capabilities in the initial namespace and fail with EPERM either way.
DISTINGUISHING = sorted(set(DENIED_PROBES) - {"bpf", "init_module"})
WORKING = ["thread", "fork", "subprocess", "tcp", "unix", "tmp_write"]

needs_bwrap = require_programs("bwrap", install="apt-get install bubblewrap")


def _syscall_numbers() -> dict[str, int]:
    names = ["ptrace", "keyctl", "bpf", "init_module", "clone", "clone3"]
    return {n: pyseccomp.resolve_syscall(pyseccomp.Arch.NATIVE, n) for n in names}


def _bwrap(args: list[str], *, filtered: bool, caps: str) -> subprocess.CompletedProcess[str]:
    """Run `args` in a bwrap sandbox, with or without the filter, with all or no capabilities."""
    cmd = [
        BWRAP or "bwrap",
        "--unshare-user",
        "--unshare-pid",
        "--unshare-net",
        "--die-with-parent",
    ]
    cmd += ["--cap-add", "ALL"] if caps == "all" else ["--cap-drop", "ALL"]
    cmd += ["--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
    fds: tuple[int, ...] = ()
    if filtered:
        fd = os.memfd_create("seccomp")
        os.write(fd, seccomp.bpf_program())
        os.lseek(fd, 0, os.SEEK_SET)
        fds = (fd,)
        cmd += ["--seccomp", str(fd)]
    try:
        return subprocess.run(
            [*cmd, "--", *args], capture_output=True, text=True, pass_fds=fds, timeout=60
        )
    finally:
        for fd in fds:
            os.close(fd)


def _probe(*, filtered: bool, caps: str) -> dict[str, object]:
    proc = _bwrap(
        [PYTHON, "-c", PROBE, json.dumps(_syscall_numbers())], filtered=filtered, caps=caps
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_bpf_program_is_cached_sock_filter_array() -> None:
    program = seccomp.bpf_program()
    assert program is seccomp.bpf_program()
    assert len(program) % 8 == 0 and len(program) > 8 * 20


@needs_bwrap
def test_policy_keeps_chroot_allowed() -> None:
    """chroot works under the filter for a root that holds CAP_SYS_CHROOT (build tools and
    Dockerfile steps use it); without the capability the kernel, not the filter, refuses it."""
    assert len(set(seccomp.DENIED_SYSCALLS)) == len(seccomp.DENIED_SYSCALLS)
    code = (
        "import errno, os\n"
        "try:\n    os.chroot('/'); print('chrooted')\n"
        "except OSError as e:\n    print(errno.errorcode[e.errno])\n"
    )
    with_cap = _bwrap([PYTHON, "-c", code], filtered=True, caps="all")
    assert with_cap.stdout == "chrooted\n", with_cap
    without = _bwrap([PYTHON, "-c", code], filtered=True, caps="none")
    assert without.stdout == "EPERM\n", without


def test_missing_libseccomp_is_setup_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pyseccomp", None)
    seccomp.bpf_program.cache_clear()
    try:
        with pytest.raises(SetupError, match="apt-get install libseccomp2"):
            seccomp.bpf_program()
    finally:
        seccomp.bpf_program.cache_clear()


@needs_bwrap
@pytest.mark.parametrize("caps", ["none", "all"])
def test_filter_denies_dangerous_syscalls(caps: str) -> None:
    out = _probe(filtered=True, caps=caps)
    assert {k: out[k] for k in DENIED_PROBES} == DENIED_PROBES
    assert out["unshare_binary"] != 0


@needs_bwrap
def test_probes_succeed_without_filter() -> None:
    """Control run: the same probes do not fail with EPERM when only the filter is missing."""
    out = _probe(filtered=False, caps="all")
    assert {k: out[k] for k in DISTINGUISHING if out[k] == errno.EPERM} == {}
    assert out["clone3"] != errno.ENOSYS
    assert out["unshare_binary"] == 0


@needs_bwrap
@pytest.mark.parametrize("caps", ["none", "all"])
def test_filter_keeps_normal_work(caps: str) -> None:
    out = _probe(filtered=True, caps=caps)
    assert {k: out[k] for k in WORKING} == dict.fromkeys(WORKING, True)


@needs_bwrap
@pytest.mark.skipif(platform.machine() != "x86_64", reason="x32 exists only on x86_64")
def test_x32_abi_is_killed() -> None:
    code = (
        "import ctypes; libc = ctypes.CDLL(None); libc.syscall.restype = ctypes.c_long; "
        "print(libc.syscall(ctypes.c_long(0x40000000 | 39)))"  # x32 getpid
    )
    proc = _bwrap([PYTHON, "-c", code], filtered=True, caps="none")
    # bwrap is pid 1 of the sandbox and reports the child's death by signal as 128+N.
    assert proc.returncode in (-signal.SIGSYS, 128 + signal.SIGSYS), (proc.returncode, proc.stdout)


def _oci_to_bpf(profile: dict[str, object]) -> bytes:
    """Compile an OCI profile the way runc/crun do, to check it means what bpf_program() means."""
    flt = pyseccomp.SyscallFilter(pyseccomp.ALLOW)
    flt.set_attr(pyseccomp.Attr.ACT_BADARCH, pyseccomp.KILL_PROCESS)
    for entry in profile["syscalls"]:  # type: ignore[attr-defined]
        assert entry["action"] == "SCMP_ACT_ERRNO"
        args = [
            pyseccomp.Arg(a["index"], pyseccomp.MASKED_EQ, a["value"], a["valueTwo"])
            for a in entry.get("args", [])
            if a["op"] == "SCMP_CMP_MASKED_EQ"
        ]
        for name in entry["names"]:
            nr = pyseccomp.resolve_syscall(pyseccomp.Arch.NATIVE, name)
            if nr >= 0:
                flt.add_rule(pyseccomp.ERRNO(entry["errnoRet"]), nr, *args)
    r, w = os.pipe()
    with os.fdopen(w, "wb") as wf:
        flt.export_bpf(wf)
    with os.fdopen(r, "rb") as rf:
        return rf.read()


def test_oci_profile_matches_bpf_program() -> None:
    profile = seccomp.oci_profile()
    assert profile["defaultAction"] == "SCMP_ACT_ALLOW"
    if platform.machine() == "x86_64":
        assert profile["architectures"] == ["SCMP_ARCH_X86_64"]
    json.dumps(profile)
    assert _oci_to_bpf(profile) == seccomp.bpf_program()


def _podman_base() -> list[str]:
    """podman's default rlimits exceed what a root without CAP_SYS_RESOURCE may set; stay below.

    runc, because crun refuses hybrid cgroup v1/v2 hosts; `:O` keeps the image read-only.
    """
    soft, hard = (
        int(x) for x in subprocess.check_output(["sh", "-c", "ulimit -n; ulimit -Hn"]).split()
    )
    return [
        "podman", "--runtime", "runc", "--cgroup-manager", "cgroupfs", "run", "--rm",
        "--network", "none", "--ulimit", f"nofile={soft}:{hard}", "--ulimit", "nproc=4096:4096",
    ]  # fmt: skip


@require_programs("podman", "runc", install="apt-get install podman runc")
def test_podman_accepts_oci_profile(tmp_path: os.PathLike[str], base_image: str) -> None:
    rootfs = ["--rootfs", f"{get_image(base_image).rootfs}:O"]
    path = os.path.join(tmp_path, "seccomp.json")
    with open(path, "w") as f:
        json.dump(seccomp.oci_profile(), f)
    script = "unshare -U true; echo rc=$?; grep Seccomp: /proc/self/status"

    def run(profile: str) -> subprocess.CompletedProcess[str]:
        argv = [*_podman_base(), "--security-opt", f"seccomp={profile}", *rootfs, "sh", "-c"]
        return subprocess.run([*argv, script], capture_output=True, text=True, timeout=120)

    # the control: with no filter at all, a new user namespace is allowed in this container
    unconfined = run("unconfined")
    assert unconfined.returncode == 0, unconfined.stderr
    assert unconfined.stdout.split() == ["rc=0", "Seccomp:", "0"], unconfined.stdout
    proc = run(path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.split("\n")
    assert lines[0] != "rc=0" and lines[1].split() == ["Seccomp:", "2"], proc.stdout
