"""The one way in: `Sandbox` (and `AsyncSandbox`), whatever runs it.

with Sandbox.create(memory="1g") as sb:
    print(sb.exec("python3 --version").stdout)

`Sandbox` is the interface (rockroll/sandbox/base.py) every sandbox implements; `create` and
`connect` return a `LocalSandbox` (this machine) or, with a server named, a `RemoteSandbox`.
Importing this module loads both, so that `Sandbox.create` can choose.
"""

from __future__ import annotations

from rockroll.sandbox.aio import AsyncSandbox
from rockroll.sandbox.base import (
    DEFAULT_TIMEOUT,
    OutputCallback,
    Sandbox,
    Session,
    Snapshot,
    server_settings,
)
from rockroll.sandbox.local import LocalSandbox, LocalSnapshot
from rockroll.sandbox.remote import RemoteSandbox, RemoteSnapshot

__all__ = [
    "DEFAULT_TIMEOUT",
    "AsyncSandbox",
    "LocalSandbox",
    "LocalSnapshot",
    "OutputCallback",
    "RemoteSandbox",
    "RemoteSnapshot",
    "Sandbox",
    "Session",
    "Snapshot",
    "server_settings",
]
