"""Where rockroll keeps its files on the host."""

from __future__ import annotations

import os
from pathlib import Path


def rockroll_home() -> Path:
    """`$ROCKROLL_HOME` (default ~/.cache/rockroll), read at call time so tests can redirect it."""
    env = os.environ.get("ROCKROLL_HOME")
    home = Path(env).expanduser() if env else Path.home() / ".cache" / "rockroll"
    home.mkdir(parents=True, exist_ok=True)
    return home
