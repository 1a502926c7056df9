"""Mount points: layer stacks that fit the overlay, unmounting, and what is mounted where."""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
from pathlib import Path

from rockroll.errors import SetupError

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
_MAX_LAYERS = 500  # the launcher's limit (launch.c MAX_LAYERS); overlayfs takes 500


def check_layers(layers: list[str]) -> None:
    """The launcher names layers 0, 1, ... in the overlay's options, which the kernel takes up to
    one page of: refuse a stack that cannot fit before anything starts."""
    opts = len("lowerdir=") + sum(len(str(i)) + 1 for i in range(len(layers)))
    opts += len(",upperdir=u/upper,workdir=u/work")
    if len(layers) > _MAX_LAYERS or opts > _MAX_OPTIONS:
        raise SetupError(
            f"too many overlay layers ({len(layers)}, at most {_MAX_LAYERS}); snapshot from an "
            "older ancestor instead of stacking snapshots of snapshots"
        )


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
