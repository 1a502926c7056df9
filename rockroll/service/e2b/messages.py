"""The JSON the e2b SDK reads, built from rockroll's values: the control plane's sandbox
records (`Sandbox`, `SandboxDetail`, `ListedSandbox`) and envd's messages in proto3's JSON
mapping (`process.ProcessEvent`, `filesystem.EntryInfo`)."""

from __future__ import annotations

import base64
import datetime
import signal
import stat
from typing import Any

from rockroll.sandbox.types import FileInfo
from rockroll.service.bodies import SandboxInfo
from rockroll.service.e2b.processes import Ending, Process

ENVD_VERSION = "0.5.7"  # the envd features spoken here: default user, octet-stream uploads
DEFAULT_TIMEOUT = 300  # seconds, when a create names none (the SDK's default)


def _time(when: float) -> str:
    return datetime.datetime.fromtimestamp(when, datetime.UTC).isoformat().replace("+00:00", "Z")


def created(info: SandboxInfo, access_token: str) -> dict[str, Any]:
    """`Sandbox`: the answer to create and connect."""
    return {
        "templateID": info.image,
        "sandboxID": info.id,
        "clientID": info.owner,
        "envdVersion": ENVD_VERSION,
        "envdAccessToken": access_token,
        "domain": None,
    }


def listed(info: SandboxInfo) -> dict[str, Any]:
    """`ListedSandbox`."""
    spec = info.spec
    end = info.deadline or info.created + DEFAULT_TIMEOUT
    return {
        "templateID": info.image,
        "sandboxID": info.id,
        "clientID": info.owner,
        "startedAt": _time(info.created),
        "endAt": _time(end),
        "cpuCount": max(1, int(spec.get("cpus") or 1)),
        "memoryMB": (info.memory or 0) >> 20,
        "diskSizeMB": (spec.get("disk") or 0) >> 20,
        "state": "running",
        "envdVersion": ENVD_VERSION,
        "metadata": info.labels,
    }


def detail(info: SandboxInfo, access_token: str) -> dict[str, Any]:
    """`SandboxDetail`."""
    network = info.spec.get("network")
    return listed(info) | {
        "envdAccessToken": access_token,
        "allowInternetAccess": network == "full" or isinstance(network, dict),
    }


# -- envd: process ---------------------------------------------------------------------------
def start_event(pid: int) -> dict[str, Any]:
    return {"event": {"start": {"pid": pid}}}


def data_event(stream: str, data: bytes) -> dict[str, Any]:
    return {"event": {"data": {stream: base64.b64encode(data).decode()}}}


def keepalive_event() -> dict[str, Any]:
    return {"event": {"keepalive": {}}}


def end_event(ending: Ending) -> dict[str, Any]:
    """As envd (Go) reports an exit: a killed command has exit code -1."""
    if ending.signal:
        name = signal.Signals(ending.signal).name.removeprefix("SIG").lower()
        status = "signal: killed" if ending.signal == signal.SIGKILL else f"signal: {name}"
        end = {"exitCode": -1, "exited": False, "status": status}
    else:
        code = ending.exit_code
        end = {"exitCode": code, "exited": True, "status": f"exit status {code}"}
    return {"event": {"end": end}}


def process_info(proc: Process) -> dict[str, Any]:
    config: dict[str, Any] = {"cmd": proc.config.cmd, "args": proc.config.args}
    config["envs"] = proc.config.envs
    if proc.config.cwd:
        config["cwd"] = proc.config.cwd
    info: dict[str, Any] = {"config": config, "pid": proc.pid}
    if proc.tag is not None:
        info["tag"] = proc.tag
    return info


# -- envd: filesystem ------------------------------------------------------------------------
def entry_info(info: FileInfo) -> dict[str, Any]:
    """`filesystem.EntryInfo` of a listing entry (files are the host's view: owned by root)."""
    kind = stat.S_IFDIR if info.is_dir else stat.S_IFREG
    return {
        "name": info.name,
        "type": "FILE_TYPE_DIRECTORY" if info.is_dir else "FILE_TYPE_FILE",
        "path": info.path,
        "size": str(info.size),
        "mode": info.mode,
        "permissions": stat.filemode(kind | info.mode),
        "owner": "root",
        "group": "root",
        "modifiedTime": _time(info.mtime),
    }


def write_info(path: str) -> dict[str, Any]:
    """One entry of the `/files` upload answer."""
    return {"name": path.rsplit("/", 1)[-1], "type": "file", "path": path}
