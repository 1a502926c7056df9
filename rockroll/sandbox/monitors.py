"""Starting a sandbox's supervisor (supervisor.py) and what it is told when its sandbox starts."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from rockroll.errors import InvalidArgument, SandboxClosed, SandboxError
from rockroll.sandbox.records import SandboxRecord, events_file, read_events
from rockroll.sandbox.spec import DEFAULT_PATH, check_network

SUPERVISOR = Path(__file__).with_name("supervisor.py")
# What the sandbox's /etc/resolv.conf says under an egress policy: the monitor's resolver
# (resolver.py), which it binds inside the sandbox's network only then (a task's own DNS server
# may want port 53 otherwise).
RESOLV_CONF = b"nameserver 127.0.0.53\noptions edns0\n"
APPLY_TIMEOUT = 5.0


def start_supervisor(channel: socket.socket, launcher: int, log_path: str) -> subprocess.Popen:
    """The supervisor of the sandbox that `launcher` will start, run by path with the standard
    library alone so that it is ready in tens of milliseconds; it waits for its settings on
    stdin and takes the init's listener over `channel`."""
    argv = [sys.executable, "-I", "-S", str(SUPERVISOR), "--monitor-fd", str(channel.fileno())]
    argv += ["--launcher", str(launcher)]
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=log,
            stderr=log,
            pass_fds=(channel.fileno(),),
            start_new_session=True,
            env={"PATH": DEFAULT_PATH},
        )


def has_policy(setting: object) -> bool:
    """Whether a `network` setting is an egress policy (names resolve through the monitor)."""
    return setting not in ("none", "full")


def monitor_settings(rec: SandboxRecord) -> dict[str, Any]:
    """The supervisor's settings: where events go, the network mode, the rules."""
    return {
        "sandbox": rec.id,
        "log": str(events_file(rec.id)),
        "watch": str(rec.dir / "watch.json"),
        "network": rec.spec.network,
        "rules": rec.spec.rules,
    }


def change_network(rec: SandboxRecord, setting: str | dict[str, Any]) -> None:
    """Tell a running sandbox's supervisor its new egress policy and wait until it holds;
    `rec.spec` gets the new setting (the caller saves the record)."""
    try:
        check_network(setting)
    except ValueError as e:
        raise InvalidArgument(f"network: {e}") from None
    if not rec.spec.own_network():
        raise InvalidArgument(
            "this sandbox was created with network='full' (the host's network); its network "
            "cannot be narrowed while it runs: create it with another setting"
        )
    if not rec.spec.monitor or rec.monitor_pid is None:
        raise InvalidArgument(
            "this sandbox is not watched (monitor=False, or the podman backend): its network "
            "is fixed at creation"
        )
    effective = {"allow": ["*"]} if setting == "full" else setting  # out through the proxy
    generation = time.time_ns()
    watch = rec.dir / "watch.json"
    tmp = watch.with_suffix(".tmp")
    body = {"network": effective, "rules": rec.spec.rules, "generation": generation}
    tmp.write_text(json.dumps(body))
    os.replace(tmp, watch)
    try:
        os.kill(rec.monitor_pid, signal.SIGHUP)
    except ProcessLookupError:
        raise SandboxClosed(f"sandbox {rec.id}'s monitor is gone; close it") from None
    deadline = time.monotonic() + APPLY_TIMEOUT
    while time.monotonic() < deadline:
        if any(e.get("generation") == generation for e in read_events(rec.id)[-50:]):
            rec.spec = rec.spec.model_copy(update={"network": setting})
            return
        time.sleep(0.005)
    raise SandboxError(f"sandbox {rec.id}'s monitor did not take the new network in time")
