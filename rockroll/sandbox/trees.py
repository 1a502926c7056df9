"""Directory trees in and out of a sandbox as tar archives, made and unpacked by the host.

The sandbox's own `tar` is never run for this: it could be replaced by anything, and its output
would be whatever the sandbox liked. The host walks the tree itself, one directory fd at a time
with O_NOFOLLOW (a symlink is archived as a link, never followed; names come from readdir, so
there is no `..` to climb), refuses FIFOs' and devices' contents, and counts bytes against a cap
before and while it reads them. Unpacking goes through the same confined opens and creates every
entry as the sandbox's root, or as the owner asked for.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tarfile
from collections.abc import Iterator
from pathlib import PurePosixPath
from typing import BinaryIO

from rockroll.errors import InvalidArgument, TooLarge
from rockroll.sandbox.files import RootFS, sandbox_path
from rockroll.sandbox.idmap import COUNT, as_sandbox_root

MAX_TREE = 1 << 30  # default cap of one tree read: bytes of file contents
_CHUNK = 1 << 20
_OVERFLOW_ID = 65534  # how an id the sandbox cannot represent shows inside (nobody)


def tree_size(fs: RootFS, path: str, limit: int | None) -> int:
    """Bytes of regular files under `path`, refused with TooLarge as soon as it passes `limit`."""
    total = 0
    for _, _, st, _ in _walk(fs, path):
        if stat.S_ISREG(st.st_mode):
            total += st.st_size
            if limit is not None and total > limit:
                raise TooLarge(
                    f"{path} holds more than {limit} bytes of files (the tree read limit); "
                    "raise max_bytes, or archive less"
                )
    return total


def write_tar(fs: RootFS, path: str, out: BinaryIO, limit: int | None = MAX_TREE) -> None:
    """Stream `path`'s contents (names relative to it) as an uncompressed tar into `out`."""
    tree_size(fs, path, limit)  # refuse before writing anything
    budget = limit
    links: dict[tuple[int, int], str] = {}
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for name, dirfd, st, base in _walk(fs, path):
            info = tarfile.TarInfo(name)
            info.mode = stat.S_IMODE(st.st_mode)
            info.mtime = int(st.st_mtime)
            info.uid, info.gid = _inside(st.st_uid, base), _inside(st.st_gid, base)
            leaf = PurePosixPath(name).name
            if stat.S_ISDIR(st.st_mode):
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif stat.S_ISLNK(st.st_mode):
                info.type = tarfile.SYMTYPE
                info.linkname = os.readlink(leaf, dir_fd=dirfd)
                tar.addfile(info)
            elif stat.S_ISREG(st.st_mode):
                key = (st.st_dev, st.st_ino)
                if st.st_nlink > 1 and key in links:
                    info.type, info.linkname = tarfile.LNKTYPE, links[key]
                    tar.addfile(info)
                    continue
                links[key] = name
                budget = _add_file(tar, info, dirfd, leaf, st, budget, path)
            elif stat.S_ISFIFO(st.st_mode):
                info.type = tarfile.FIFOTYPE
                tar.addfile(info)
            # devices and sockets are left out: nothing inside can use a device node it made


def _add_file(
    tar: tarfile.TarFile,
    info: tarfile.TarInfo,
    dirfd: int,
    leaf: str,
    st: os.stat_result,
    budget: int | None,
    root: str,
) -> int | None:
    fd = os.open(leaf, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dirfd)
    with os.fdopen(fd, "rb") as fh:
        now = os.fstat(fd)
        if not stat.S_ISREG(now.st_mode) or now.st_ino != st.st_ino:
            raise InvalidArgument(f"{root}: {info.name} changed while it was archived")
        size = now.st_size
        if budget is not None:
            if size > budget:
                raise TooLarge(f"{root} grew past the tree read limit while it was archived")
            budget -= size
        info.size = size
        tar.addfile(info, _Exactly(fh, size))
    return budget


class _Exactly:
    """Reads exactly `size` bytes: zeros if the file shrank, no more if it grew."""

    def __init__(self, fh: BinaryIO, size: int) -> None:
        self.fh, self.left = fh, size

    def read(self, n: int = -1) -> bytes:
        n = self.left if n < 0 else min(n, self.left)
        data = self.fh.read(n) if n else b""
        data += bytes(n - len(data))
        self.left -= n
        return data


def _walk(fs: RootFS, path: str) -> Iterator[tuple[str, int, os.stat_result, int | None]]:
    """(name relative to `path`, fd of its directory, lstat, id base), parents first."""
    top = fs.open(path, os.O_RDONLY | os.O_DIRECTORY)
    stack = [(top, "")]
    try:
        while stack:
            dirfd, prefix = stack.pop()
            try:
                for entry in sorted(os.listdir(dirfd)):
                    st = os.stat(entry, dir_fd=dirfd, follow_symlinks=False)
                    name = f"{prefix}{entry}"
                    yield name, dirfd, st, fs.id_base
                    if stat.S_ISDIR(st.st_mode):
                        flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
                        with contextlib.suppress(FileNotFoundError):
                            stack.append((os.open(entry, flags, dir_fd=dirfd), name + "/"))
            finally:
                os.close(dirfd)
    finally:
        for fd, _ in stack:
            os.close(fd)


def _inside(host_id: int, base: int | None) -> int:
    if base is None:
        return host_id
    return host_id - base if base <= host_id < base + COUNT else _OVERFLOW_ID


def extract_tar(
    fs: RootFS, dest: str, archive: BinaryIO, owner: tuple[int, int] | None = None
) -> int:
    """Unpack `archive` into `dest` (created if missing), confined to the sandbox. Entries are
    owned by the sandbox's root, or by `owner` (uid, gid inside); the number unpacked."""
    fs.makedirs(dest)
    count = 0
    try:
        with tarfile.open(fileobj=archive, mode="r|*") as tar:
            for member in tar:
                target = _member_path(dest, member.name)
                if target is None:
                    continue
                _extract_one(fs, tar, member, target, dest, owner)
                count += 1
    except tarfile.TarError as exc:
        raise InvalidArgument(f"the archive for {dest} is not a readable tar file: {exc}") from None
    return count


def _member_path(dest: str, name: str) -> str | None:
    """Where a member goes; None for the archive's root ('.'). Names may not climb out."""
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if not parts:
        return None
    if ".." in parts:
        raise InvalidArgument(f"archive member {name!r} climbs out of the target directory")
    return sandbox_path("/".join(parts), dest)


def _extract_one(
    fs: RootFS,
    tar: tarfile.TarFile,
    member: tarfile.TarInfo,
    target: str,
    dest: str,
    owner: tuple[int, int] | None,
) -> None:
    parent, leaf = str(PurePosixPath(target).parent), PurePosixPath(target).name
    fs.makedirs(parent)
    pfd = fs.open(parent, os.O_PATH | os.O_DIRECTORY)
    mode = stat.S_IMODE(member.mode)
    try:
        with as_sandbox_root(fs.id_base):
            if member.isdir():
                with contextlib.suppress(FileExistsError):
                    os.mkdir(leaf, 0o700, dir_fd=pfd)
                fd = os.open(leaf, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=pfd)
            elif member.isreg():
                _unlink_non_dir(pfd, leaf)
                flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
                fd = os.open(leaf, flags, 0o600, dir_fd=pfd)
                src = tar.extractfile(member)
                with os.fdopen(os.dup(fd), "wb") as fh:
                    while src is not None and (chunk := src.read(_CHUNK)):
                        fh.write(chunk)
            elif member.issym():
                _unlink_non_dir(pfd, leaf)
                os.symlink(member.linkname, leaf, dir_fd=pfd)
                return
            elif member.islnk():
                link = _member_path(dest, member.linkname)
                if link is None:
                    raise InvalidArgument(f"archive hard link {member.name!r} has no target")
                _unlink_non_dir(pfd, leaf)
                sfd = fs.open(link, os.O_PATH | os.O_NOFOLLOW)
                try:
                    os.link(f"/proc/self/fd/{sfd}", leaf, dst_dir_fd=pfd, follow_symlinks=True)
                finally:
                    os.close(sfd)
                return
            elif member.isfifo():
                _unlink_non_dir(pfd, leaf)
                os.mkfifo(leaf, 0o600, dir_fd=pfd)
                fd = os.open(leaf, os.O_PATH | os.O_NOFOLLOW, dir_fd=pfd)
                os.chmod(f"/proc/self/fd/{fd}", mode)
                os.close(fd)
                return
            else:
                return  # devices: a sandbox cannot use device nodes it makes
            try:
                if owner is not None:
                    base = fs.id_base or 0
                    os.fchown(fd, base + owner[0], base + owner[1])
                os.fchmod(fd, mode)
                os.utime(fd, (member.mtime, member.mtime))
            finally:
                os.close(fd)
    finally:
        os.close(pfd)


def _unlink_non_dir(dirfd: int, name: str) -> None:
    """Make room for a new entry, as tar does: remove a file or link already there."""
    try:
        st = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        raise IsADirectoryError(errno.EISDIR, f"{name} is a directory in the sandbox", name)
    os.unlink(name, dir_fd=dirfd)
