"""Isolated environments in which agents run commands.

import rockroll.sandbox
with rockroll.sandbox.create(memory="1g") as sb:
    sb.exec("uname -a")
"""

from __future__ import annotations

from typing import Any

from rockroll.sandbox.sdk import Sandbox


def create(image: Any = "base", **settings: Any) -> Sandbox:
    """`Sandbox.create`: a local sandbox, or one on the server named by `server` or
    ROCKROLL_SERVER."""
    return Sandbox.create(image, **settings)


def connect(sandbox_id: str, **settings: Any) -> Sandbox:
    """`Sandbox.connect`: attach to a running sandbox by id."""
    return Sandbox.connect(sandbox_id, **settings)
