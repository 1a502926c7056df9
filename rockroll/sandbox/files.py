"""File access inside a sandbox's root from the host, confined to that root.

Paths are resolved with openat2(RESOLVE_IN_ROOT), so a symlink planted by the sandbox
(`/root/x -> /etc/passwd`) resolves inside the sandbox, never on the host.
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
from pathlib import PurePosixPath

from rockroll.sandbox.errors import InvalidArgument, SandboxError
from rockroll.sandbox.types import FileInfo

_libc = ctypes.CDLL(None, use_errno=True)
_SYS_OPENAT2 = 437  # the same number on every architecture (unified table since Linux 5.6)
_RESOLVE_NO_MAGICLINKS = 0x02
_RESOLVE_IN_ROOT = 0x10
_EAGAIN_RETRIES = 1000


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


def sandbox_path(path: object, cwd: str = "/") -> str:
    """Absolute, normalised path inside the sandbox; refuses paths that climb above `/`."""
    if isinstance(path, os.PathLike):
        path = os.fspath(path)
    if not isinstance(path, str) or not path or "\0" in path:
        raise InvalidArgument(f"path must be a non-empty string without NUL bytes, got {path!r}")
    parts: list[str] = []
    full = path if path.startswith("/") else f"{cwd.rstrip('/')}/{path}"
    for part in full.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not parts:
                raise InvalidArgument(
                    f"path {path!r} escapes the sandbox root; use a path inside the sandbox"
                )
            parts.pop()
        else:
            parts.append(part)
    return "/" + "/".join(parts)


class RootFS:
    """Open files below one directory as if it were `/`."""

    def __init__(self, root: str) -> None:
        self.root = root

    def open(self, path: str, flags: int, mode: int = 0o644) -> int:
        rel = path.lstrip("/") or "."
        dirfd = os.open(self.root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        how = _OpenHow(flags | os.O_CLOEXEC, mode if flags & os.O_CREAT else 0, 0)
        how.resolve = _RESOLVE_IN_ROOT | _RESOLVE_NO_MAGICLINKS
        try:
            # openat2 answers EAGAIN when a `..` in the path races with a rename or a mount
            # anywhere on the host (other sandboxes starting); the kernel asks us to retry.
            for _ in range(_EAGAIN_RETRIES):
                fd = _libc.syscall(
                    _SYS_OPENAT2, dirfd, rel.encode(), ctypes.byref(how), ctypes.sizeof(how)
                )
                if fd >= 0 or ctypes.get_errno() != errno.EAGAIN:
                    break
        finally:
            os.close(dirfd)
        if fd < 0:
            err = ctypes.get_errno()
            raise _os_error(err, path)
        return fd

    def read_bytes(self, path: str) -> bytes:
        fd = self.open(path, os.O_RDONLY)
        with os.fdopen(fd, "rb") as fh:
            if stat.S_ISDIR(os.fstat(fh.fileno()).st_mode):
                raise IsADirectoryError(errno.EISDIR, f"{path} is a directory", path)
            return fh.read()

    def write_bytes(self, path: str, data: bytes, mode: int = 0o644, parents: bool = True) -> None:
        if parents:
            self.makedirs(str(PurePosixPath(path).parent))
        fd = self.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)

    def makedirs(self, path: str, mode: int = 0o755) -> None:
        current = PurePosixPath("/")
        for part in PurePosixPath(path).parts[1:]:
            parent = self.open(str(current), os.O_PATH | os.O_DIRECTORY)
            try:
                os.mkdir(part, mode, dir_fd=parent)
            except FileExistsError:
                pass
            finally:
                os.close(parent)
            current = current / part

    def listdir(self, path: str) -> list[FileInfo]:
        fd = self.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            entries = []
            for name in sorted(os.listdir(fd)):
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                entries.append(
                    FileInfo(
                        path=str(PurePosixPath(path) / name),
                        name=name,
                        is_dir=stat.S_ISDIR(st.st_mode),
                        size=st.st_size,
                        mode=stat.S_IMODE(st.st_mode),
                        mtime=st.st_mtime,
                    )
                )
            return entries
        finally:
            os.close(fd)

    def exists(self, path: str) -> bool:
        try:
            os.close(self.open(path, os.O_PATH))
        except FileNotFoundError:
            return False
        return True


def _os_error(err: int, path: str) -> OSError:
    if err == errno.ENOSYS:
        return SandboxError("openat2 is not available: the sandbox needs Linux 5.6 or newer")
    if err == errno.EXDEV:
        return PermissionError(err, f"{path}: refused, it would leave the sandbox", path)
    return OSError(err, f"{os.strerror(err)}: {path} (inside the sandbox)", path)
