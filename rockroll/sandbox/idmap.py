"""The host ids a sandbox's users map onto, and host-side file creation as the sandbox's root.

Every sandbox has a user namespace in which ids 0..65535 are host ids BASE..BASE+65535
(default BASE 1,000,000,000; `ROCKROLL_ID_BASE` changes it): root inside is an unprivileged id
outside, as with Docker's userns-remap or podman's `--userns`. Files keep their ordinary ids on
disk (images and snapshots are plain root-owned trees) and the sandbox sees them through
idmapped mounts shifted by BASE, so a file the host writes into a sandbox must be created with
the sandbox root's host ids: `as_sandbox_root()` switches the calling thread's filesystem ids
for that (Linux keeps them per thread), keeping the host's capabilities.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
from collections.abc import Iterator
from pathlib import Path

from rockroll.errors import SetupError

DEFAULT_BASE = 1_000_000_000
COUNT = 65536  # ids inside a sandbox: 0..65535, like a Docker userns-remap range
_libc = ctypes.CDLL(None, use_errno=True)
_CAP_VERSION_3 = 0x20080522


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


@functools.cache
def id_base() -> int:
    """Host id of a sandbox's root; checked once against the host's users and sub-id ranges."""
    raw = os.environ.get("ROCKROLL_ID_BASE", "")
    try:
        base = int(raw) if raw else DEFAULT_BASE
    except ValueError:
        raise SetupError(f"ROCKROLL_ID_BASE must be an integer, got {raw!r}") from None
    if not 65536 <= base <= 0xFFFFFFFF - COUNT - 1:
        raise SetupError(
            f"ROCKROLL_ID_BASE={base} must be at least 65536 and leave {COUNT} ids below 2^32"
        )
    clash = _overlap(base)
    if clash:
        raise SetupError(
            f"the sandbox id range {base}-{base + COUNT - 1} overlaps {clash}; set "
            "ROCKROLL_ID_BASE to a free range (sandbox root must not be a host user)"
        )
    return base


def _overlap(base: int) -> str | None:
    """The first host user, group or sub-id range that uses ids of [base, base + COUNT)."""
    end = base + COUNT
    for table in ("/etc/passwd", "/etc/group"):
        for line in _lines(table):
            parts = line.split(":")
            if len(parts) > 2 and parts[2].isdigit() and base <= int(parts[2]) < end:
                return f"{table} entry {parts[0]!r}"
    for table in ("/etc/subuid", "/etc/subgid"):
        for line in _lines(table):
            parts = line.split(":")
            if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
                start, count = int(parts[1]), int(parts[2])
                if start < end and base < start + count:
                    return f"the {table} range of {parts[0]!r}"
    return None


def _lines(path: str) -> list[str]:
    try:
        return Path(path).read_text(errors="replace").splitlines()
    except OSError:
        return []


@contextlib.contextmanager
def as_sandbox_root(base: int | None) -> Iterator[None]:
    """Create files in this thread as the sandbox's root (host ids `base`), capabilities kept.

    `base` None (a sandbox without a user namespace) changes nothing.
    """
    if base is None:
        yield
        return
    old_uid, old_gid = _libc.setfsuid(-1), _libc.setfsgid(-1)
    _libc.setfsgid(base)
    _libc.setfsuid(base)
    try:
        if _libc.setfsuid(-1) != base or _libc.setfsgid(-1) != base:
            raise SetupError("cannot switch filesystem ids to the sandbox's root (needs root)")
        _raise_capabilities()
        yield
    finally:
        _libc.setfsuid(old_uid)  # back to 0: the kernel restores the file capabilities
        _libc.setfsgid(old_gid)


def _raise_capabilities() -> None:
    """Effective = permitted: a non-zero fsuid drops DAC_OVERRIDE, CHOWN, FOWNER... from it."""
    head = _CapHeader(_CAP_VERSION_3, 0)
    data = (_CapData * 2)()
    if _libc.capget(ctypes.byref(head), data) != 0:
        raise SetupError(f"capget failed: {os.strerror(ctypes.get_errno())}")
    for d in data:
        d.effective = d.permitted
    if _libc.capset(ctypes.byref(head), data) != 0:
        raise SetupError(f"capset failed: {os.strerror(ctypes.get_errno())}")
