"""File access inside a sandbox's root from the host, confined to that root.

Paths are resolved with openat2(RESOLVE_IN_ROOT), so a symlink planted by the sandbox
(`/root/x -> /etc/passwd`) resolves inside the sandbox, never on the host. Nothing the sandbox
decides costs the host more than the caller allows: reads check the size before reading and
refuse what is not a regular file (a FIFO would block, /dev/zero never ends). Files the host
creates are created as the sandbox's root (see `idmap.as_sandbox_root`).
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import PurePosixPath

from rockroll.errors import InvalidArgument, SandboxError, TooLarge
from rockroll.sandbox.idmap import as_sandbox_root
from rockroll.sandbox.inroot import open_in_root
from rockroll.sandbox.types import FileInfo

MAX_READ = 256 << 20  # default cap of one read_bytes: bytes the host takes in at once


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
    """Open files below one directory as if it were `/`; create them as the sandbox's root
    (host ids `id_base`, None: as the caller)."""

    def __init__(self, root: str, id_base: int | None = None) -> None:
        self.root = root
        self.id_base = id_base

    def open(self, path: str, flags: int, mode: int = 0o644) -> int:
        dirfd = os.open(self.root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            with as_sandbox_root(self.id_base if flags & os.O_CREAT else None):
                try:
                    return open_in_root(dirfd, path, flags, mode)
                except OSError as e:
                    err = e.errno or errno.EIO
        finally:
            os.close(dirfd)
        raise _os_error(err, path)

    def open_regular(self, path: str, max_bytes: int | None) -> tuple[int, int]:
        """(fd, size) of a regular file no bigger than `max_bytes` (None: any size)."""
        fd = self.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
        try:
            st = os.fstat(fd)
            if stat.S_ISDIR(st.st_mode):
                raise IsADirectoryError(errno.EISDIR, f"{path} is a directory", path)
            if not stat.S_ISREG(st.st_mode):
                raise InvalidArgument(f"{path} is not a regular file (a device, FIFO or socket)")
            if max_bytes is not None and st.st_size > max_bytes:
                raise TooLarge(
                    f"{path} is {st.st_size} bytes, over the {max_bytes}-byte read limit; "
                    "raise max_bytes (or read it in parts with a command: head -c, split)"
                )
            os.set_blocking(fd, True)
        except BaseException:
            os.close(fd)
            raise
        return fd, st.st_size

    def read_bytes(self, path: str, max_bytes: int | None = MAX_READ) -> bytes:
        fd, _ = self.open_regular(path, max_bytes)
        with os.fdopen(fd, "rb") as fh:
            data = fh.read() if max_bytes is None else fh.read(max_bytes + 1)
        if max_bytes is not None and len(data) > max_bytes:  # it grew while we read
            raise TooLarge(f"{path} grew past the {max_bytes}-byte read limit while read")
        return data

    def write_bytes(self, path: str, data: bytes, mode: int = 0o644, parents: bool = True) -> None:
        if parents:
            self.makedirs(str(PurePosixPath(path).parent))
        fd = self.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOCTTY, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)

    def makedirs(self, path: str, mode: int = 0o755) -> None:
        current = PurePosixPath("/")
        for part in PurePosixPath(path).parts[1:]:
            parent = self.open(str(current), os.O_PATH | os.O_DIRECTORY)
            try:
                with as_sandbox_root(self.id_base):
                    os.mkdir(part, mode, dir_fd=parent)
            except FileExistsError:
                pass
            finally:
                os.close(parent)
            current = current / part

    def symlink(self, target: str, path: str) -> None:
        """Make `path` a symlink to `target` (any text: it resolves inside the sandbox)."""
        parent = self.open(str(PurePosixPath(path).parent), os.O_PATH | os.O_DIRECTORY)
        try:
            with as_sandbox_root(self.id_base):
                os.symlink(target, PurePosixPath(path).name, dir_fd=parent)
        finally:
            os.close(parent)

    def remove(self, path: str) -> bool:
        """Remove `path` and, for a directory, all below it, never following a symlink (the
        link itself goes). False if there was nothing there."""
        try:
            parent = self.open(str(PurePosixPath(path).parent), os.O_PATH | os.O_DIRECTORY)
        except (FileNotFoundError, NotADirectoryError):
            return False
        try:
            name = PurePosixPath(path).name
            if not name:
                raise InvalidArgument("refusing to remove the sandbox's root directory")
            try:
                st = os.stat(name, dir_fd=parent, follow_symlinks=False)
            except FileNotFoundError:
                return False
            if stat.S_ISDIR(st.st_mode):
                _remove_below(parent, name)
                os.rmdir(name, dir_fd=parent)
            else:
                os.unlink(name, dir_fd=parent)
            return True
        finally:
            os.close(parent)

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


def _remove_below(parent: int, name: str) -> None:
    fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
    try:
        for entry in os.listdir(fd):
            st = os.stat(entry, dir_fd=fd, follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                _remove_below(fd, entry)
                os.rmdir(entry, dir_fd=fd)
            else:
                os.unlink(entry, dir_fd=fd)
    finally:
        os.close(fd)


def _os_error(err: int, path: str) -> OSError:
    if err == errno.ENOSYS:
        return SandboxError("openat2 is not available: the sandbox needs Linux 5.6 or newer")
    if err == errno.EXDEV:
        return PermissionError(err, f"{path}: refused, it would leave the sandbox", path)
    return OSError(err, f"{os.strerror(err)}: {path} (inside the sandbox)", path)
