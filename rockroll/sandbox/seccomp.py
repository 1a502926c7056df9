"""Deny-list seccomp policy for sandboxed processes, rendered for bwrap (BPF) and podman (OCI).

The policy is a deny list on top of the namespaces and dropped capabilities the runtimes already
apply: it closes kernel interfaces that are a large attack surface or that would let a process
rebuild its own sandbox (new namespaces, mounts), while everything an agent's tools need stays
allowed. Both renderings come from the same tables below so they cannot drift apart.
"""

from __future__ import annotations

import errno
import functools
import platform
import tempfile
from dataclasses import dataclass
from typing import Any

from rockroll.errors import SetupError

# Denied with EPERM. chroot stays allowed: it is harmless without CAP_SYS_CHROOT and build tools
# use it inside the sandbox.
DENIED_SYSCALLS: tuple[str, ...] = (
    "mount",
    "umount2",
    "move_mount",
    "open_tree",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "mount_setattr",
    "pivot_root",
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "kexec_load",
    "kexec_file_load",
    "bpf",
    "init_module",
    "finit_module",
    "delete_module",
    "keyctl",
    "add_key",
    "request_key",
    "unshare",
    "setns",
    "swapon",
    "swapoff",
    "reboot",
    "open_by_handle_at",
    "perf_event_open",
    "userfaultfd",
    "acct",
    "quotactl",
    "lookup_dcookie",
    "syslog",
    "iopl",
    "ioperm",
    "settimeofday",
    "clock_settime",
    "adjtimex",
    # reach into another process (the init above all): ptrace's relatives
    "pidfd_getfd",
    "process_madvise",
    "kcmp",
    # large attack surfaces Docker closes too
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "modify_ldt",
    "uselib",
    "vm86",
    "vm86old",
    "nfsservctl",
    "fanotify_init",
    "name_to_handle_at",
)

# clone3 passes its flags in memory, which seccomp cannot inspect; ENOSYS makes libc fall back to
# clone, whose flags the rules below can check.
ENOSYS_SYSCALLS: tuple[str, ...] = ("clone3",)

CLONE_NEWTIME = 0x00000080
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
CLONE_NAMESPACE_FLAGS: tuple[int, ...] = (
    CLONE_NEWNS,
    CLONE_NEWUSER,
    CLONE_NEWPID,
    CLONE_NEWNET,
    CLONE_NEWIPC,
    CLONE_NEWUTS,
    CLONE_NEWCGROUP,
    CLONE_NEWTIME,
)
AF_INET = 2
AF_INET6 = 10
AF_NETLINK = 16
AF_PACKET = 17
AF_VSOCK = 40
NETLINK_AUDIT = 9
SOCK_RAW = 3
SOCK_TYPE_MASK = 0xF  # the rest of socket()'s type carries SOCK_NONBLOCK / SOCK_CLOEXEC
INT_MASK = 0xFFFFFFFF  # int arguments: ignore the upper register half, as the kernel does


@dataclass(frozen=True)
class Cond:
    """``(args[index] & mask) == value``."""

    index: int
    mask: int
    value: int


@dataclass(frozen=True)
class ArgRule:
    """Fail `syscall` with `errno` when every one of `conds` holds."""

    syscall: str
    conds: tuple[Cond, ...]
    errno: int = errno.EPERM


def _clone_flags_index() -> int:
    """s390 swaps clone's first two arguments; every other architecture passes flags first."""
    return 1 if platform.machine().startswith("s390") else 0


def arg_rules() -> tuple[ArgRule, ...]:
    """Argument-dependent denials for the host architecture (rules are OR-ed, the conditions
    of one rule AND-ed; no two rules of one syscall can both match)."""
    clone_index = _clone_flags_index()

    def family(value: int) -> Cond:
        return Cond(0, INT_MASK, value)

    raw = Cond(1, SOCK_TYPE_MASK, SOCK_RAW)
    return (
        *(ArgRule("clone", (Cond(clone_index, f, f),)) for f in CLONE_NAMESPACE_FLAGS),
        ArgRule("socket", (family(AF_PACKET),)),
        ArgRule("socket", (family(AF_INET), raw)),
        ArgRule("socket", (family(AF_INET6), raw)),
        # As on a kernel without audit: shadow-utils (useradd, groupadd) and apt packages that
        # create system users treat EPROTONOSUPPORT as "no audit" and go on (EPERM aborts them).
        ArgRule(
            "socket", (family(AF_NETLINK), Cond(2, INT_MASK, NETLINK_AUDIT)), errno.EPROTONOSUPPORT
        ),
        # As on a host without vsock: no channel to a hypervisor or its other guests.
        ArgRule("socket", (family(AF_VSOCK),), errno.EAFNOSUPPORT),
    )


_OCI_ARCHES = {
    "x86_64": "SCMP_ARCH_X86_64",
    "amd64": "SCMP_ARCH_X86_64",
    "aarch64": "SCMP_ARCH_AARCH64",
    "arm64": "SCMP_ARCH_AARCH64",
    "ppc64le": "SCMP_ARCH_PPC64LE",
    "s390x": "SCMP_ARCH_S390X",
    "riscv64": "SCMP_ARCH_RISCV64",
}


def _load_pyseccomp() -> Any:
    """Import pyseccomp, which dlopens libseccomp at import time."""
    try:
        import pyseccomp
    except (ImportError, OSError, RuntimeError) as e:
        raise SetupError(
            f"seccomp filtering needs libseccomp and the pyseccomp package ({e}); "
            "install them with `apt-get install libseccomp2` and `pip install pyseccomp`"
        ) from e
    return pyseccomp


@functools.cache
def bpf_program() -> bytes:
    """The policy as a raw `struct sock_filter` array for the host arch, for `bwrap --seccomp FD`.

    Only the native architecture is added, and every other one (x86 via int 0x80, x32 on x86_64)
    hits the bad-arch action, which kills the process: other ABIs would bypass the syscall
    numbers checked here.
    """
    sc = _load_pyseccomp()
    try:
        flt = sc.SyscallFilter(sc.ALLOW)
        try:
            flt.set_attr(sc.Attr.ACT_BADARCH, sc.KILL_PROCESS)
        except OSError:  # kernel/libseccomp too old for KILL_PROCESS; KILL_THREAD still blocks
            flt.set_attr(sc.Attr.ACT_BADARCH, sc.KILL)

        def add(action: int, name: str, *args: Any) -> None:
            nr = sc.resolve_syscall(sc.Arch.NATIVE, name)
            if nr < 0:  # not a syscall on this architecture
                return
            flt.add_rule(action, nr, *args)

        for name in DENIED_SYSCALLS:
            add(sc.ERRNO(errno.EPERM), name)
        for name in ENOSYS_SYSCALLS:
            add(sc.ERRNO(errno.ENOSYS), name)
        for rule in arg_rules():
            conds = [sc.Arg(c.index, sc.MASKED_EQ, c.mask, c.value) for c in rule.conds]
            add(sc.ERRNO(rule.errno), rule.syscall, *conds)
        with tempfile.TemporaryFile() as f:
            flt.export_bpf(f)
            f.seek(0)
            program = f.read()
    except OSError as e:
        raise SetupError(
            f"libseccomp failed to build the seccomp filter ({e}); "
            "install or upgrade it with `apt-get install libseccomp2`"
        ) from e
    if not program or len(program) % 8:
        raise SetupError(
            f"libseccomp produced a malformed filter ({len(program)} bytes); "
            "reinstall it with `apt-get install --reinstall libseccomp2`"
        )
    return program


def oci_profile() -> dict[str, Any]:
    """The policy as an OCI/Docker seccomp profile, for `podman run --security-opt seccomp=FILE`.

    Only the host architecture is listed so that other ABIs (x86, x32) are refused by the
    runtime's bad-arch handling instead of being allowed by default. For SCMP_CMP_MASKED_EQ,
    `value` is the mask and `valueTwo` the expected result, as runc and crun read them.
    """
    arch = _OCI_ARCHES.get(platform.machine())
    syscalls: list[dict[str, Any]] = [
        {"names": list(DENIED_SYSCALLS), "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EPERM},
        {"names": list(ENOSYS_SYSCALLS), "action": "SCMP_ACT_ERRNO", "errnoRet": errno.ENOSYS},
    ]
    syscalls += [
        {
            "names": [rule.syscall],
            "action": "SCMP_ACT_ERRNO",
            "errnoRet": rule.errno,
            "args": [
                {"index": c.index, "value": c.mask, "valueTwo": c.value, "op": "SCMP_CMP_MASKED_EQ"}
                for c in rule.conds
            ],
        }
        for rule in arg_rules()
    ]
    return {
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": [arch] if arch else [],
        "syscalls": syscalls,
    }
