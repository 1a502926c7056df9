"""The init (the process that runs every command) is out of the sandbox's reach."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import stat
import time

from rockroll import Sandbox
from rockroll.sandbox.initbin import init_binary

# Each attack on pid 1; prints what the kernel answered.
ATTACKS = r"""
import ctypes, errno, json, os, socket, sys as _sys
nr = json.loads(_sys.argv[1])
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
out = {}

def attempt(name, fn):
    try:
        fn()
        out[name] = "done"
    except OSError as e:
        out[name] = errno.errorcode.get(e.errno, str(e.errno))

def sys(name, *args):
    ctypes.set_errno(0)
    r = libc.syscall(ctypes.c_long(nr[name]), *[ctypes.c_long(a) for a in args])
    if r < 0:
        raise OSError(ctypes.get_errno(), "")
    return r

attempt("chmod_exe", lambda: os.chmod("/proc/1/exe", 0o4755))
attempt("chmod_exe_0", lambda: os.chmod("/proc/1/exe", 0))
attempt("write_exe", lambda: os.close(os.open("/proc/1/exe", os.O_WRONLY)))
attempt("readlink_exe", lambda: os.readlink("/proc/1/exe"))
attempt("open_mem", lambda: os.close(os.open("/proc/1/mem", os.O_RDWR)))
attempt("fd_link", lambda: os.readlink("/proc/1/fd/0"))
attempt("fd_open", lambda: os.close(os.open("/proc/1/fd/0", os.O_RDONLY)))
attempt("environ", lambda: open("/proc/1/environ", "rb").read())
attempt("kill_init", lambda: os.kill(1, 9))
pidfd = os.pidfd_open(1)
attempt("pidfd_getfd", lambda: sys("pidfd_getfd", pidfd, 3, 0))
attempt("process_madvise", lambda: sys("process_madvise", pidfd, 0, 0, 0, 0))
attempt("process_vm_readv", lambda: sys("process_vm_readv", 1, 0, 0, 0, 0, 0))
attempt("ptrace_attach", lambda: sys("ptrace", 16, 1, 0, 0))
attempt("io_uring_setup", lambda: sys("io_uring_setup", 8, 0))
attempt("modify_ldt", lambda: sys("modify_ldt", 0, 0, 0))
attempt("vsock", lambda: socket.socket(40, socket.SOCK_STREAM).close())
print(json.dumps(out))
"""

# A daemon that keeps trying to take over the init and its command channel.
TAMPERER = r"""
import os, time
pidfd = os.pidfd_open(1)
while True:
    for path in ("/proc/1/mem", "/proc/1/exe"):
        try:
            fd = os.open(path, os.O_RDWR)
            os.write(fd, b"\xcc" * 16)
            open("/tmp/tampered", "a").write(path + "\n")
        except OSError:
            pass
    try:
        os.chmod("/proc/1/exe", 0)
        open("/tmp/tampered", "a").write("chmod\n")
    except OSError:
        pass
    with open("/tmp/tries", "a") as tries:  # one byte per round of attempts
        tries.write(".")
    time.sleep(0.01)
"""


SEALED = fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE

SYSCALLS = ("pidfd_getfd", "process_madvise", "process_vm_readv", "ptrace", "io_uring_setup")


def attacks() -> list[str]:
    import pyseccomp

    names = (*SYSCALLS, "modify_ldt")
    numbers = {n: pyseccomp.resolve_syscall(pyseccomp.Arch.NATIVE, n) for n in names}
    return ["python3", "-c", ATTACKS, json.dumps(numbers)]


def test_every_attack_on_the_init_is_refused(sb: Sandbox) -> None:
    res = sb.exec(attacks())
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    refused = {"EPERM", "EACCES"}
    for name in ("chmod_exe", "chmod_exe_0", "write_exe", "readlink_exe", "open_mem"):
        assert out[name] in refused, (name, out)
    for name in ("fd_link", "fd_open", "environ", "pidfd_getfd", "process_madvise"):
        assert out[name] in refused, (name, out)
    for name in ("process_vm_readv",):
        assert out[name] in refused, (name, out)
    for name in ("ptrace_attach", "io_uring_setup"):
        assert out[name] in refused, (name, out)
    if out["modify_ldt"] != "ENOSYS":  # x86 only
        assert out["modify_ldt"] in refused, out
    assert out["kill_init"] == "done"  # accepted, and ignored: the init of a pid namespace
    assert out["vsock"] == errno.errorcode[errno.EAFNOSUPPORT]
    assert sb.exec("echo still served").stdout == "still served\n"


def test_init_runs_from_a_sealed_memfd_and_its_binary_is_untouched(
    sb: Sandbox, base_image: str
) -> None:
    before = os.stat(init_binary())
    sb.exec(attacks())
    after = os.stat(init_binary())
    assert stat.S_IMODE(after.st_mode) == stat.S_IMODE(before.st_mode) == 0o755
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    host_pid = _init_host_pid(sb)
    assert os.readlink(f"/proc/{host_pid}/exe").startswith("/memfd:rockroll-init")
    fd = os.open(f"/proc/{host_pid}/exe", os.O_RDONLY)
    try:
        seals = fcntl.fcntl(fd, fcntl.F_GET_SEALS)
    finally:
        os.close(fd)
    assert seals & SEALED == SEALED, oct(seals)  # no write, resize or unsealing, ever
    with Sandbox.create(base_image) as later:  # the next sandbox of this home still starts
        assert later.exec("true").exit_code == 0


def _tries(sb: Sandbox) -> int:
    return len(sb.read_bytes("/tmp/tries")) if sb.exists("/tmp/tries") else 0


def test_a_tampering_daemon_changes_no_exit_code_or_output(sb: Sandbox) -> None:
    sb.exec(f"nohup python3 -c '{TAMPERER}' >/dev/null 2>&1 &")
    sb.exec("setsid sh -c 'while :; do sleep 0.01; done' >/dev/null 2>&1 &")
    deadline = time.monotonic() + 60
    while _tries(sb) == 0:  # the daemon is at work before the first command
        assert time.monotonic() < deadline, "the tampering daemon never ran"
        time.sleep(0.05)
    before = _tries(sb)
    for i in range(40):
        res = sb.exec(f"echo {i}; exit {i % 7}")
        assert (res.exit_code, res.stdout) == (i % 7, f"{i}\n")
    assert _tries(sb) > before, "the daemon stopped trying while the commands ran"
    assert sb.exec("cat /tmp/tampered 2>/dev/null").stdout == ""
    entries = sb.audit_log()[-41:-1]
    assert [e["exit_code"] for e in entries] == [i % 7 for i in range(40)]
    assert sb.kill_all() == 0
    assert sb.exec("ps -e --no-headers -o comm").stdout.split() == ["rockroll-init", "ps"]


def _init_host_pid(sb: Sandbox) -> int:
    from rockroll.sandbox.cgroups import CgroupSet

    for pid in CgroupSet.attach(str(sb.record.cgroup)).pids():
        try:
            with open(f"/proc/{pid}/status") as fh:
                status = fh.read()
        except FileNotFoundError:
            continue
        nspid = next(ln for ln in status.splitlines() if ln.startswith("NSpid:")).split()
        if nspid[-1] == "1":
            return pid
    raise AssertionError("no init found in the sandbox's cgroup")
