"""openat2(RESOLVE_IN_ROOT): a path opened below a directory as if that directory were `/`, so
a symlink the sandbox planted (`/root/x -> /etc/shadow`) resolves inside it, never on the host.

Shared by the host's file access (`files.RootFS`) and the monitor's file watch, which runs in
the supervisor without the package: standard library only.
"""

from __future__ import annotations

import ctypes
import errno
import os

SYS_OPENAT2 = 437  # the same number on every architecture (unified table since Linux 5.6)
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_IN_ROOT = 0x10
EAGAIN_RETRIES = 1000

_libc = ctypes.CDLL(None, use_errno=True)


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


def open_in_root(root_fd: int, path: str, flags: int, mode: int = 0) -> int:
    """`path` opened below the directory `root_fd` (always close-on-exec); OSError with the
    errno when it cannot be (ENOSYS: a kernel without openat2)."""
    how = _OpenHow(flags | os.O_CLOEXEC, mode if flags & os.O_CREAT else 0)
    how.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS
    rel = (path.lstrip("/") or ".").encode()
    # openat2 answers EAGAIN when a `..` in the path races with a rename or a mount anywhere on
    # the host (other sandboxes starting); the kernel asks us to retry.
    for _ in range(EAGAIN_RETRIES):
        fd = _libc.syscall(SYS_OPENAT2, root_fd, rel, ctypes.byref(how), ctypes.sizeof(how))
        if fd >= 0:
            return fd
        err = ctypes.get_errno()
        if err != errno.EAGAIN:
            break
    raise OSError(err, os.strerror(err), path)
