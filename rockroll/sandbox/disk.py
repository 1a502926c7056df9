"""Disk limits: a sandbox's writable layer is a filesystem of its own, as big as its `disk`.

Memory has a cgroup; disk has none, and project quotas need a kernel built with them (XFS or
ext4 quota support) that many are not. So each sandbox with a disk limit writes to an ext4
filesystem in a sparse file of exactly that size, loop-mounted inside the sandbox's private
mount namespace: a write past the limit fails inside with ENOSPC (and past `inodes` files too),
`df /` inside shows the limit, and the host never holds more than the limit for it.

The filesystem is not made per sandbox: `mkfs.ext4` runs once per (size, inodes) into a template
under `$ROCKROLL_HOME/disks/`, and a sandbox gets a sparse copy (its few hundred KiB of metadata,
about 0.3 ms). The template has no journal (a sandbox's files do not outlive a crash of it), its
inode tables are marked zeroed (no lazy-init thread writing behind the sandbox's back), and it
holds the overlay's empty `upper/` and `work/`. The launcher attaches the copy to a loop device
with autoclear, which the kernel detaches once the sandbox's last process is gone. Before that,
`discard_disk` shuts the filesystem down so that nothing is written back; the image file is then
moved to `$ROCKROLL_HOME/trash/` and deleted by a background thread (deleting a file is slow on
a filesystem mounted with `discard`), or by the next garbage collection after a crash.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import struct
import subprocess
import tempfile
import threading
from pathlib import Path

from rockroll.errors import InvalidArgument, SetupError
from rockroll.sandbox.paths import home_subdir

MIN_DISK = 16 << 20
DEFAULT_DISK = 10 << 30  # Harbor's default storage_mb (10240)
BUILD_DISK = 20 << 30  # a Dockerfile build step's writable layer
_lock = threading.Lock()
_INSTALL = "run `apt-get install e2fsprogs` (or create sandboxes with disk=None: no limit)"
_EXT4_IOC_SHUTDOWN = 0x8004587D  # _IOR('X', 125, __u32)
_GOING_FLAGS_NOLOGFLUSH = 0x2


def check_disk(size: int | None, inodes: int | None) -> None:
    """Refuse limits the host cannot honour; None means no limit (and no own filesystem)."""
    if size is None:
        if inodes is not None:
            raise InvalidArgument("inodes needs a disk limit too (disk=None sets no limit)")
        return
    if size < MIN_DISK:
        raise InvalidArgument(f"disk must be at least {MIN_DISK >> 20}m, got {size}")
    if inodes is not None and not 16 <= inodes <= 1 << 32:
        raise InvalidArgument(f"inodes must be between 16 and 2^32, got {inodes}")
    st = os.statvfs(home_subdir("disks"))
    free = st.f_bavail * st.f_frsize
    if size > free:
        raise InvalidArgument(
            f"disk={size >> 20}m is more than the {free >> 20} MiB free on the host where "
            f"sandbox disks live ({home_subdir('disks')}); ask for less, or free space"
        )


def new_disk(dest: Path, size: int, inodes: int | None) -> None:
    """Write a fresh, empty filesystem of `size` bytes with `inodes` files at `dest`."""
    template = _template(size, inodes)
    _sparse_copy(template, dest)


def _template(size: int, inodes: int | None) -> Path:
    path = home_subdir("disks") / f"ext4-{size}-{inodes or 'auto'}.img"
    if path.exists():
        return path
    with _lock, open(home_subdir("disks") / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not path.exists():
            _mkfs(path, size, inodes)
    return path


def _mkfs(path: Path, size: int, inodes: int | None) -> None:
    mkfs = shutil.which("mkfs.ext4") or shutil.which("mke2fs")
    if mkfs is None:
        raise SetupError(f"disk limits need mkfs.ext4: {_INSTALL}")
    with tempfile.TemporaryDirectory(dir=path.parent) as tree:
        for name in ("upper", "work"):
            os.mkdir(os.path.join(tree, name), 0o755)
        tmp = path.with_suffix(".tmp")
        with open(tmp, "wb") as fh:
            fh.truncate(size)
        argv = [mkfs, "-q", "-F", "-t", "ext4", "-b", "4096", "-m", "0", "-L", "sandbox"]
        argv += ["-O", "^has_journal,^resize_inode", "-E", "root_owner=0:0", "-d", tree]
        if inodes is not None:
            argv += ["-N", str(inodes)]
        try:
            done = subprocess.run([*argv, str(tmp)], capture_output=True, text=True, timeout=300)
            if done.returncode != 0:
                raise SetupError(
                    f"mkfs.ext4 failed for a {size >> 20} MiB sandbox disk: "
                    f"{done.stderr.strip() or done.stdout.strip()}"
                )
            os.rename(tmp, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()


def throw_away(image: Path) -> None:
    """Move a sandbox's disk image to the trash (a rename: fast) for the deleter to remove."""
    try:
        os.rename(image, home_subdir("trash") / f"{image.parent.name}-{image.name}")
    except FileNotFoundError:
        return
    _deleter.wake()


def empty_trash() -> int:
    """Delete every image in the trash now; how many."""
    count = 0
    for path in home_subdir("trash").iterdir():
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            count += 1
    return count


class _Deleter:
    """A thread that empties the trash whenever something is thrown in."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def wake(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="rockroll-trash", daemon=True
                )
                self._thread.start()
        self._event.set()

    def _run(self) -> None:
        while True:
            self._event.wait()
            self._event.clear()
            with contextlib.suppress(OSError):
                empty_trash()


_deleter = _Deleter()


def discard_disk(mount: str) -> None:
    """Shut a sandbox's filesystem down before the sandbox goes: nothing more is written back
    (its unmount would otherwise flush every dirty page of a disk about to be freed)."""
    try:
        fd = os.open(mount, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return  # already gone, or the sandbox never got that far
    try:
        fcntl.ioctl(fd, _EXT4_IOC_SHUTDOWN, struct.pack("I", _GOING_FLAGS_NOLOGFLUSH))
    except OSError:
        pass  # not ext4 (a disk=None sandbox) or an old kernel: the unmount just flushes
    finally:
        os.close(fd)


def _sparse_copy(src: Path, dst: Path) -> None:
    """Copy only the data extents of `src`; the holes stay holes."""
    s = os.open(src, os.O_RDONLY | os.O_CLOEXEC)
    try:
        d = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            size = os.fstat(s).st_size
            os.ftruncate(d, size)
            offset = 0
            while offset < size:
                try:
                    data = os.lseek(s, offset, os.SEEK_DATA)
                except OSError:  # ENXIO: only a hole is left
                    break
                hole = os.lseek(s, data, os.SEEK_HOLE)
                while data < hole:
                    copied = os.copy_file_range(s, d, hole - data, data, data)
                    if copied <= 0:
                        raise OSError(f"copying the disk template {src} stopped at {data}")
                    data += copied
                offset = hole
        finally:
            os.close(d)
    finally:
        os.close(s)
