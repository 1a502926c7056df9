"""Seccomp user notification from the supervisor's side: receive a watched call, read what it
points at in the caller's memory, answer it.

The sandbox's init installs the filter (init.c, `--monitor-fd`); the supervisor process
(`supervisor.py`) holds the listener and uses what is here. Standard library only: the
supervisor runs by path, without importing the package, so that it starts in tens of
milliseconds.

Reading a caller's memory and then letting its call go on is not a security decision: another
thread of the caller can change the memory in between (the kernel reads it again). The
supervisor records what it read and may refuse; whatever must hold against a racing caller is
enforced elsewhere (the sandbox's network namespace has no route out).
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import struct
from typing import NamedTuple

NOTIF = struct.Struct("<QII iIQ 6Q")  # id, pid, flags; seccomp_data: nr, arch, ip, args
RESP = struct.Struct("<QqiI")  # id, val, error, flags
RECV = 0xC0000000 | (NOTIF.size << 16) | (ord("!") << 8) | 0
SEND = 0xC0000000 | (RESP.size << 16) | (ord("!") << 8) | 1
ID_VALID = 0x40000000 | (8 << 16) | (ord("!") << 8) | 2
ADDFD_STRUCT = struct.Struct("<QIIII")  # id, flags, srcfd, newfd, newfd_flags
ADDFD = 0x40000000 | (ADDFD_STRUCT.size << 16) | (ord("!") << 8) | 3
ADDFD_FLAG_SETFD = 1
FLAG_CONTINUE = 1
SYS_PIDFD_GETFD = 438  # the same number on every architecture

# The watched calls' numbers on each architecture the init's filter knows.
SYSCALLS: dict[str, dict[int, str]] = {
    "x86_64": {59: "execve", 322: "execveat", 42: "connect", 44: "sendto", 46: "sendmsg",
               307: "sendmmsg"},
    "aarch64": {221: "execve", 281: "execveat", 203: "connect", 206: "sendto", 211: "sendmsg",
                269: "sendmmsg"},
    "riscv64": {221: "execve", 281: "execveat", 203: "connect", 206: "sendto", 211: "sendmsg",
                269: "sendmmsg"},
}  # fmt: skip
NAMES = SYSCALLS.get(os.uname().machine, {})
MAX_ARGS = 4096
MAX_STRING = 65536
MAX_ARGV_BYTES = 256 * 1024
PAGE = 4096

_libc = ctypes.CDLL(None, use_errno=True)


class Call(NamedTuple):
    """One watched call, waiting for its answer."""

    id: int
    pid: int  # in the supervisor's (the host's) pid namespace
    name: str
    args: tuple[int, ...]


def receive(listener: int) -> Call | None:
    """The next pending call (the listener must be readable), or None when it went away."""
    buf = bytearray(NOTIF.size)
    try:
        fcntl.ioctl(listener, RECV, buf)
    except OSError as e:
        if e.errno in (errno.ENOENT, errno.EINTR):  # the caller died or was interrupted
            return None
        raise
    id_, pid, _flags, nr, _arch, _ip, *args = NOTIF.unpack(buf)
    return Call(id_, pid, NAMES.get(nr, str(nr)), tuple(args))


def _send(listener: int, call: Call, error: int, flags: int) -> None:
    try:
        fcntl.ioctl(listener, SEND, bytearray(RESP.pack(call.id, 0, error, flags)))
    except OSError as e:
        if e.errno != errno.ENOENT:  # ENOENT: the caller is gone, nothing to answer
            raise


def allow(listener: int, call: Call) -> None:
    """Let the call run as the caller made it."""
    _send(listener, call, 0, FLAG_CONTINUE)


def refuse(listener: int, call: Call, err: int) -> None:
    """Fail the call with `err` (an errno)."""
    _send(listener, call, -err, 0)


def succeed(listener: int, call: Call, value: int = 0) -> None:
    """Answer the call as done, returning `value`, without running it."""
    try:
        fcntl.ioctl(listener, SEND, bytearray(RESP.pack(call.id, value, 0, 0)))
    except OSError as e:
        if e.errno != errno.ENOENT:
            raise


def install_fd(listener: int, call: Call, fd: int, number: int, cloexec: bool) -> None:
    """Put (a copy of) our `fd` into the caller as its descriptor `number`, replacing what was
    there (SECCOMP_IOCTL_NOTIF_ADDFD with SETFD, Linux 5.9+)."""
    flags = os.O_CLOEXEC if cloexec else 0
    buf = bytearray(ADDFD_STRUCT.pack(call.id, ADDFD_FLAG_SETFD, fd, number, flags))
    fcntl.ioctl(listener, ADDFD, buf)


def fd_flags(pid: int, fd: int) -> int:
    """The open flags of process `pid`'s descriptor `fd` (O_NONBLOCK, O_CLOEXEC, ...)."""
    with open(f"/proc/{pid}/fdinfo/{fd}") as fh:
        for line in fh:
            if line.startswith("flags:"):
                return int(line.split()[1], 8)
    return 0


def still_waiting(listener: int, call: Call) -> bool:
    """Whether the caller is still the one that made `call` (its pid was not reused)."""
    try:
        fcntl.ioctl(listener, ID_VALID, bytearray(struct.pack("<Q", call.id)))
    except OSError:
        return False
    return True


def take_fd(pid: int, fd: int) -> int:
    """A copy of process `pid`'s file descriptor `fd` (pidfd_getfd)."""
    pidfd = os.pidfd_open(pid)
    try:
        got = _libc.syscall(SYS_PIDFD_GETFD, pidfd, fd, 0)
        if got < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"pidfd_getfd({pid}, {fd}): {os.strerror(err)}")
        return got
    finally:
        os.close(pidfd)


class Memory:
    """Reads from one process's memory through /proc/PID/mem."""

    def __init__(self, pid: int) -> None:
        self.fd = os.open(f"/proc/{pid}/mem", os.O_RDONLY | os.O_CLOEXEC)

    def close(self) -> None:
        os.close(self.fd)

    def __enter__(self) -> Memory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def read(self, addr: int, size: int) -> bytes:
        return os.pread(self.fd, size, addr) if addr else b""

    def string(self, addr: int, limit: int = MAX_STRING) -> bytes:
        """The NUL-terminated string at `addr`, read a page at a time (never past its end)."""
        out = b""
        while addr and len(out) < limit:
            chunk = os.pread(self.fd, PAGE - addr % PAGE, addr)
            end = chunk.find(b"\0")
            if end >= 0:
                return out + chunk[:end]
            if not chunk:
                break
            out += chunk
            addr += len(chunk)
        return out[:limit]

    def pointers(self, addr: int, limit: int = MAX_ARGS) -> list[int]:
        """The NULL-terminated array of pointers at `addr`."""
        out: list[int] = []
        while addr and len(out) < limit:
            chunk = os.pread(self.fd, PAGE - addr % PAGE, addr)
            if len(chunk) < 8:
                break
            for (p,) in struct.iter_unpack("<Q", chunk[: len(chunk) // 8 * 8]):
                if p == 0:
                    return out
                out.append(p)
            addr += len(chunk) // 8 * 8
        return out[:limit]

    def argv(self, addr: int) -> list[str]:
        args: list[str] = []
        total = 0
        for p in self.pointers(addr):
            arg = self.string(p).decode("utf-8", "surrogateescape")
            total += len(arg)
            if total > MAX_ARGV_BYTES:
                args.append("…")
                break
            args.append(arg)
        return args
