"""Overlay mounts and safe paths, through system calls (no `mount` child process per sandbox)."""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
from pathlib import Path

from rockroll.sandbox.errors import SetupError

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.mount.argtypes = [
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_ulong,
    ctypes.c_char_p,
]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_MNT_DETACH = 2
_MAX_OPTIONS = 4000  # the kernel takes one page of mount options


def overlay_options(lower: list[Path], upper: Path, work: Path) -> str:
    """Mount options for `lower` (top layer first) + writable `upper`."""
    opts = f"lowerdir={':'.join(str(p) for p in lower)},upperdir={upper},workdir={work}"
    if len(opts) > _MAX_OPTIONS:
        raise SetupError(
            f"too many or too long overlay layers ({len(lower)} layers, {len(opts)} bytes of "
            "options); set ROCKROLL_HOME to a shorter path or snapshot from an older ancestor"
        )
    return opts


def mount_overlay(lower: list[Path], upper: Path, work: Path, target: Path) -> None:
    """Mount `lower` (top layer first) + writable `upper` at `target` in this mount namespace."""
    opts = overlay_options(lower, upper, work)
    if _libc.mount(b"overlay", str(target).encode(), b"overlay", 0, opts.encode()) != 0:
        err = ctypes.get_errno()
        hint = " (mounting needs root)" if err == errno.EPERM else ""
        raise SetupError(f"cannot mount overlay at {target}: {os.strerror(err)}{hint}")


def unmount(target: Path) -> None:
    """Detach a mount; a path that is not mounted is fine."""
    if _libc.umount2(str(target).encode(), _MNT_DETACH) != 0:
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOENT):
            raise SetupError(f"cannot unmount {target}: {os.strerror(err)}")


def mounts_under(prefix: Path) -> list[Path]:
    """Mount points at or below `prefix`, deepest first (the order to unmount them)."""
    found = []
    root = str(prefix).rstrip("/") + "/"
    with open("/proc/self/mountinfo") as fh:
        for line in fh:
            point = line.split()[4].encode().decode("unicode_escape")
            if point.startswith(root):
                found.append(Path(point))
    return sorted(found, key=lambda p: len(p.parts), reverse=True)
