"""Where rockroll keeps its files on the host."""

from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path


def rockroll_home() -> Path:
    """`$ROCKROLL_HOME` (default ~/.cache/rockroll), read at call time so tests can redirect it."""
    return _home(os.environ.get("ROCKROLL_HOME") or "")


def home_subdir(name: str) -> Path:
    """A directory under the home, created on first use."""
    return _subdir(os.environ.get("ROCKROLL_HOME") or "", name)


@functools.cache
def _home(env: str) -> Path:
    home = Path(env).expanduser() if env else Path.home() / ".cache" / "rockroll"
    home.mkdir(parents=True, exist_ok=True)
    return home


@functools.cache
def _subdir(env: str, name: str) -> Path:
    path = _home(env) / name
    path.mkdir(exist_ok=True)
    return path


def searchable_dir(path: Path) -> Path:
    """`path`, created, it and its parent mode 0711: a directory the sandboxes' unprivileged
    ids can pass through (to a root mounted there) but not list."""
    path.mkdir(parents=True, exist_ok=True)
    for each in (path.parent, path):
        os.chmod(each, 0o711)
    return path


def home_tag() -> str:
    """A short hash of the home, in names shared between homes (cgroups, the disk pool), so
    that gc under one home never touches another's."""
    return _tag(str(rockroll_home()))


@functools.cache
def _tag(home: str) -> str:
    return hashlib.sha256(str(Path(home).resolve()).encode()).hexdigest()[:8]
