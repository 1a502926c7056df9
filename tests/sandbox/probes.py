"""Programs run inside sandboxes, and what the tests of every backend expect of them."""

from __future__ import annotations

# Forks sleeping children until fork fails; prints how many it made and the errno of the
# failure, then kills and reaps them, so that the sandbox's process slots are free again.
FORK_COUNTER = """
import errno, os, signal, time
children = []
failure = "none"
while len(children) < 100000:
    try:
        pid = os.fork()
    except OSError as e:
        failure = errno.errorcode.get(e.errno, str(e.errno))
        break
    if pid == 0:
        time.sleep(60); os._exit(0)
    children.append(pid)
print(len(children), failure, flush=True)
for pid in children:
    os.kill(pid, signal.SIGKILL)
for pid in children:
    os.waitpid(pid, 0)
"""

# Docker's default capability set (moby's oci/caps/defaults.go) and the bit of each. A sandbox's
# root holds all of them but CAP_NET_RAW, inside its user namespace only.
DOCKER_DEFAULT_CAPS = {
    "CAP_CHOWN": 0, "CAP_DAC_OVERRIDE": 1, "CAP_FOWNER": 3, "CAP_FSETID": 4, "CAP_KILL": 5,
    "CAP_SETGID": 6, "CAP_SETUID": 7, "CAP_SETPCAP": 8, "CAP_NET_BIND_SERVICE": 10,
    "CAP_NET_RAW": 13, "CAP_SYS_CHROOT": 18, "CAP_MKNOD": 27, "CAP_AUDIT_WRITE": 29,
    "CAP_SETFCAP": 31,
}  # fmt: skip
DOCKER_DEFAULT_MASK = "00000000a80425fb"  # what `docker run` shows in CapEff


def sandbox_caps_mask() -> str:
    """CapEff/CapPrm/CapBnd as /proc/self/status prints them for a sandbox's root."""
    bits = sum(1 << bit for name, bit in DOCKER_DEFAULT_CAPS.items() if name != "CAP_NET_RAW")
    return f"{bits:016x}"


def cap_names(mask: str) -> list[str]:
    """The capabilities of a /proc/self/status mask, by name (unknown bits as numbers)."""
    value = int(mask, 16)
    by_bit = {bit: name for name, bit in DOCKER_DEFAULT_CAPS.items()}
    return [by_bit.get(bit, str(bit)) for bit in range(64) if value >> bit & 1]


# Calls that any process may make on Linux without privilege, so that EPERM can only come from
# the seccomp filter: PTRACE_TRACEME and a new user namespace (in a child, which exits).
SECCOMP_PROBE = r"""
import ctypes, errno, os
libc = ctypes.CDLL(None, use_errno=True)
def err(rc):
    return "ALLOWED" if rc == 0 else errno.errorcode.get(ctypes.get_errno(), "?")
def in_child(fn):
    pid = os.fork()
    if pid == 0:
        os._exit(0 if fn() == 0 else ctypes.get_errno())
    code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    return "ALLOWED" if code == 0 else errno.errorcode.get(code, str(code))
status = dict(ln.split(":", 1) for ln in open("/proc/self/status").read().splitlines())
print("seccomp", status["Seccomp"].strip())
print("ptrace", in_child(lambda: libc.ptrace(0, 0, 0, 0)))
print("unshare", in_child(lambda: libc.unshare(0x10000000)))
"""
