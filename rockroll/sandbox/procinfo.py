"""What the supervisor reads about a sandbox's processes from the host's /proc: ids as the
sandbox sees them, command lines, sockets, routes. Standard library only, run by path."""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import struct

MAX_CMDLINE = 256 * 1024

# Programs whose standard input or output being a network socket makes them a remote shell.
SHELLS = frozenset({
    "sh", "bash", "dash", "zsh", "ksh", "ash", "busybox", "fish", "csh", "tcsh", "python",
    "python3", "python2", "perl", "ruby", "php", "node", "lua",
})  # fmt: skip


def read(path: str, size: int = 16384) -> bytes:
    """A small /proc file's bytes (os-level calls: a buffered open costs several times more)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.read(fd, size)
    finally:
        os.close(fd)


def status(pid: int) -> dict[str, str]:
    """PPid and NSpid of /proc/PID/status (the host's ids of the parent; the ids in each pid
    namespace), found without parsing the rest."""
    text = read(f"/proc/{pid}/status")
    out = {}
    for key in (b"PPid", b"NSpid"):
        at = text.find(b"\n" + key + b":")
        if at >= 0:
            end = text.find(b"\n", at + 1)
            out[key.decode()] = text[at + len(key) + 2 : end].decode().strip()
    return out


def inner_pid(status: dict[str, str]) -> int:
    """The pid as the sandbox sees it (the last of NSpid)."""
    return int(status.get("NSpid", "0").split()[-1] or 0)


def cmdline(pid: int) -> list[str]:
    try:
        raw = read(f"/proc/{pid}/cmdline", MAX_CMDLINE)
    except OSError:
        return []
    return [a.decode("utf-8", "surrogateescape") for a in raw.split(b"\0")[:-1]]


def start_time(pid: int) -> str:
    """When `pid` started (clock ticks since boot): with the pid, names one process."""
    try:
        return read(f"/proc/{pid}/stat").rsplit(b")", 1)[1].split()[19].decode()
    except (OSError, IndexError):
        return ""


TICKS = os.sysconf("SC_CLK_TCK")


def uptime() -> float:
    """Seconds since the host booted (what /proc/PID/stat's start times count from)."""
    return float(read("/proc/uptime").split()[0])


def cpu_time(pid: int, start: str, now: float) -> tuple[float, float] | None:
    """CPU seconds (user and system) that `pid` has used, and their share of one core since it
    started (`now`: the host's `uptime()`); None when it is gone or is no longer the process
    that started at `start`."""
    try:
        fields = read(f"/proc/{pid}/stat").rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    if len(fields) < 20 or fields[19].decode() != start:
        return None
    seconds = (int(fields[11]) + int(fields[12])) / TICKS
    age = now - int(fields[19]) / TICKS
    return seconds, seconds / max(age, 0.01)


def network_inodes(pid: int) -> set[str]:
    """Inodes of the TCP and UDP sockets in the network namespace of `pid`."""
    inodes = set()
    for table in ("tcp", "tcp6", "udp", "udp6"):
        try:
            with open(f"/proc/{pid}/net/{table}") as fh:
                next(fh, None)
                inodes |= {line.split()[9] for line in fh if len(line.split()) > 9}
        except OSError:
            continue
    return inodes


def stdio_socket(pid: int) -> bool:
    """Whether the standard input or output of `pid` is a TCP or UDP socket."""
    links = []
    for fd in (0, 1):
        try:
            links.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            continue
    inodes = {link[8:-1] for link in links if link.startswith("socket:[")}
    return bool(inodes) and bool(inodes & network_inodes(pid))


def sockaddr(raw: bytes) -> tuple[str, str, int] | None:
    """(family, address, port) of an IPv4 or IPv6 sockaddr; None for any other family."""
    if len(raw) < 2:
        return None
    (family,) = struct.unpack_from("=H", raw)
    if family == socket.AF_INET and len(raw) >= 8:
        return "inet", str(ipaddress.IPv4Address(raw[4:8])), struct.unpack_from(">H", raw, 2)[0]
    if family == socket.AF_INET6 and len(raw) >= 24:
        addr = ipaddress.IPv6Address(raw[8:24])
        mapped = addr.ipv4_mapped
        return "inet6", str(mapped or addr), struct.unpack_from(">H", raw, 2)[0]
    return None


def routed(pid: int, address: str) -> bool:
    """Whether the network namespace of `pid` has an IPv4 route to `address` (a private
    network's bridge, say); a `network="none"` sandbox alone has none."""
    try:
        addr = int(ipaddress.IPv4Address(address))
        with open(f"/proc/{pid}/net/route") as fh:
            rows = [line.split() for line in list(fh)[1:]]
    except (OSError, ValueError):
        return False
    for row in rows:
        if len(row) > 7:
            dest = int.from_bytes(bytes.fromhex(row[1]), "little")
            mask = int.from_bytes(bytes.fromhex(row[7]), "little")
            if addr & mask == dest:
                return True
    return False


def loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def descendants(pid: int) -> list[int]:
    out: list[int] = []
    todo = [pid]
    while todo and len(out) < 65536:
        p = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                with open(f"/proc/{p}/task/{tid}/children") as fh:
                    kids = [int(k) for k in fh.read().split()]
            except OSError:
                continue
            out += kids
            todo += kids
    return out


def init_pid(launcher: int) -> int:
    """The sandbox's init: the only child of its bwrap (the launcher's pid)."""
    with open(f"/proc/{launcher}/task/{launcher}/children") as fh:
        kids = fh.read().split()
    if not kids:
        raise OSError(errno.ESRCH, "the sandbox's init is not running")
    return int(kids[0])
