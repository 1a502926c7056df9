"""Writes to the files a program uses to outlive its task: cron, services, shell start-up files,
authorized_keys, ld.so.preload; and the shell history files, whose removal, emptying or
replacement by a link to /dev/null covers tracks. The supervisor watches them with inotify from
the host (through /proc/INIT/root), so a write is seen even when no program was started for it:
a shell builtin's `echo ... >> ~/.bashrc` inside a decoded script.

inotify does not say who wrote: a write event has the path and the end of the file, not a pid.
Every path is opened with openat2(RESOLVE_IN_ROOT) below the sandbox's root, so a symlink the
sandbox planted (`/root/.bashrc -> /etc/shadow`) resolves inside the sandbox, never on the host.
Standard library only, like the supervisor that runs it.
"""

from __future__ import annotations

import ctypes
import os
import stat
import struct
import time
from typing import Any

if __package__:
    from rockroll.sandbox.inroot import open_in_root
else:  # loaded by the supervisor, run by path
    from inroot import open_in_root  # type: ignore[no-redef]

IN_CLOSE_WRITE = 0x8
IN_MOVED_FROM = 0x40
IN_MOVED_TO = 0x80
IN_CREATE = 0x100
IN_DELETE = 0x200
IN_ISDIR = 0x40000000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC
MASK = IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE | IN_DELETE | IN_MOVED_FROM
GONE = IN_DELETE | IN_MOVED_FROM
EVENT = struct.Struct("iIII")  # wd, mask, cookie, len
TAIL = 600  # bytes of the file an event carries

# Files whose removal is an event too (a removed .bashrc or authorized_keys is no finding).
HISTORIES = (".bash_history", ".zsh_history", ".sh_history", ".ash_history", ".python_history")

# Directories watched, and which of their entries matter (None: all of them).
WATCHED: dict[str, tuple[str, ...] | None] = {
    "/etc": ("crontab", "anacrontab", "ld.so.preload", "profile", "bash.bashrc", "rc.local",
             "environment", "sudoers"),
    "/etc/cron.d": None, "/etc/cron.hourly": None, "/etc/cron.daily": None,
    "/etc/cron.weekly": None, "/etc/cron.monthly": None, "/var/spool/cron": None,
    "/var/spool/cron/crontabs": None, "/etc/systemd/system": None, "/etc/init.d": None,
    "/etc/profile.d": None, "/etc/xdg/autostart": None, "/etc/sudoers.d": None,
    "/root": (".bashrc", ".profile", ".bash_profile", ".bash_login", ".zshrc", ".zprofile",
              ".ssh", ".config", *HISTORIES),
    "/root/.ssh": ("authorized_keys", "authorized_keys2", "rc", "config"),
    "/root/.config": ("systemd", "autostart"),
    "/root/.config/systemd": ("user",),
    "/root/.config/systemd/user": None,
    "/root/.config/autostart": None,
}  # fmt: skip

# Every directory on the way to a watched one, with the names that lead there: `mkdir -p
# /etc/systemd/system` made while the sandbox runs is followed down to the watched directory.
ON_THE_WAY: dict[str, set[str]] = {}
for _path in WATCHED:
    _parts = _path.strip("/").split("/")
    for _depth in range(1, len(_parts)):
        _parent = "/" + "/".join(_parts[:_depth])
        ON_THE_WAY.setdefault(_parent.rstrip("/") or "/", set()).add(_parts[_depth])

_libc = ctypes.CDLL(None, use_errno=True)


def _open(root_fd: int, path: str, flags: int) -> int:
    """`path` below the sandbox's root (inroot.py), or -1 where it cannot be opened."""
    try:
        return open_in_root(root_fd, path, flags)
    except OSError:
        return -1


class FileWatch:
    """inotify watches on one sandbox's persistence paths; `read()` turns what changed into
    events."""

    def __init__(self, root: str) -> None:
        self.root = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        self.fd = _libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if self.fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"inotify_init1: {os.strerror(err)}")
        self.dirs: dict[int, str] = {}
        self.sizes: dict[str, int] = {}  # what each file held when last seen
        for path in sorted(set(WATCHED) | set(ON_THE_WAY)):
            self._add(path)

    def _add(self, path: str) -> None:
        folder = _open(self.root, path, os.O_PATH | os.O_DIRECTORY)
        if folder < 0:
            return
        try:
            wd = _libc.inotify_add_watch(self.fd, f"/proc/self/fd/{folder}".encode(), MASK)
        finally:
            os.close(folder)
        if wd >= 0:
            self.dirs[wd] = path
            for name in WATCHED.get(path) or ():
                info = self._stat(f"{path}/{name}")
                if info is not None:
                    self.sizes[f"{path}/{name}"] = info.st_size

    def read(self) -> list[dict[str, Any]]:
        try:
            data = os.read(self.fd, 65536)
        except BlockingIOError:
            return []
        events = []
        paths: set[str] = set()  # a create and its close in one batch are one write
        at = 0
        while at + EVENT.size <= len(data):
            wd, mask, _cookie, size = EVENT.unpack_from(data, at)
            name = (
                data[at + EVENT.size : at + EVENT.size + size]
                .rstrip(b"\0")
                .decode("utf-8", "surrogateescape")
            )
            at += EVENT.size + size
            folder = self.dirs.get(wd)
            if folder is None or not name:
                continue
            path = f"{folder.rstrip('/')}/{name}"
            if mask & IN_ISDIR:
                if path in WATCHED or path in ON_THE_WAY:  # made after the sandbox started
                    events += self._follow(path, paths)
                continue
            if not self._wanted(folder, name):
                continue
            if mask & GONE:
                if name in HISTORIES:
                    self.sizes.pop(path, None)
                    events.append(self._event(path, removed=True))
                continue
            if mask & IN_CREATE and name in HISTORIES and self._empty_file(path):
                continue  # made to be written: the close that follows says what it holds
            if path not in paths:
                paths.add(path)
                events.append(self._event(path))
        return events

    def _stat(self, path: str, flags: int = os.O_PATH) -> os.stat_result | None:
        """`path`'s status below the sandbox's root, or None where it cannot be had."""
        fd = _open(self.root, path, flags)
        if fd < 0:
            return None
        try:
            return os.fstat(fd)
        except OSError:
            return None
        finally:
            os.close(fd)

    def _empty_file(self, path: str) -> bool:
        """Whether `path` is an empty regular file (not a link put in its place)."""
        info = self._stat(path, os.O_PATH | os.O_NOFOLLOW)
        return info is not None and stat.S_ISREG(info.st_mode) and info.st_size == 0

    @staticmethod
    def _wanted(folder: str, name: str) -> bool:
        if folder not in WATCHED:
            return False
        names = WATCHED[folder]
        return names is None or name in names

    def _follow(self, path: str, paths: set[str]) -> list[dict[str, Any]]:
        """Watch a directory made while the sandbox runs, and report what was written in it
        before the watch was there (`mkdir -p ~/.ssh && echo KEY >> ~/.ssh/authorized_keys`)."""
        self._add(path)
        found: list[dict[str, Any]] = []
        fd = _open(self.root, path, os.O_RDONLY | os.O_DIRECTORY)
        if fd < 0:
            return found
        try:
            names = os.listdir(fd)
        except OSError:
            names = []
        finally:
            os.close(fd)
        for name in names:
            child = f"{path}/{name}"
            if child in WATCHED or child in ON_THE_WAY:
                found += self._follow(child, paths)
            elif self._wanted(path, name) and child not in paths:
                paths.add(child)
                found.append(self._event(child))
        return found

    def _event(self, path: str, removed: bool = False) -> dict[str, Any]:
        """The write's event; `tail` is what the file gained since it was last seen (a file
        that did not grow: its end; a removed file, or one that is no regular file: empty)."""
        tail = ""
        fd = -1 if removed else _open(self.root, path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
        if fd >= 0:
            try:
                if stat.S_ISREG(os.fstat(fd).st_mode):
                    size = os.fstat(fd).st_size
                    start = self.sizes.get(path, 0)
                    start = start if 0 <= start < size else 0
                    start = max(start, size - TAIL)
                    tail = os.pread(fd, size - start, start).decode("utf-8", "replace")
                    self.sizes[path] = size
            except OSError:
                pass
            finally:
                os.close(fd)
        event = {"time": round(time.time(), 6), "kind": "write", "path": path, "tail": tail}
        return {**event, "removed": True} if removed else event
