"""Private networks: a few sandboxes that reach each other by name, and nothing else.

A multi-container task (Compose's extra services: a database, an API server) needs its
sandboxes on one network, as Compose puts them, while no sandbox reaches the outside. A
`PrivateNetwork` is a bridge inside a network namespace of its own that has no other link, so
no route leads out of it; each sandbox joins with a veth pair whose inner end (`eth0`) goes into
the sandbox's own network namespace (`network="none"` sandboxes have one) and whose outer end
is plugged into the bridge. Addresses come from one /24 (the same in every private network:
the networks never meet), names from the sandboxes' /etc/hosts. Sandboxes outside the network
have no interface that leads to it.

The host sets this up as root with `ip` (iproute2) and `nsenter`. The namespace is named
`rockroll-<pid>-<token>`, so that `stale_networks` finds the ones a crashed process left.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import shutil
import subprocess
from pathlib import Path

from rockroll.errors import InvalidArgument, SandboxError, SetupError

SUBNET = "10.89.0"  # the default network: .2 to .254 (every network has its own copy)
NETNS_DIR = Path("/run/netns")
PREFIX = "rockroll-"


class PrivateNetwork:
    """A bridge in its own network namespace; `attach(netns)` plugs a sandbox in. `subnet`
    (an IPv4 network like "10.0.0.0/24") is where addresses come from; its first host address
    is left free, as Docker keeps it for the gateway."""

    def __init__(self, subnet: str = SUBNET + ".0/24") -> None:
        for tool in ("ip", "nsenter"):
            if shutil.which(tool) is None:
                raise SetupError(f"private networks need `{tool}`: run `apt-get install iproute2`")
        try:
            self.subnet = ipaddress.IPv4Network(subnet)
        except ValueError as exc:
            raise InvalidArgument(f"subnet {subnet!r} is not an IPv4 network: {exc}") from None
        self.name = f"{PREFIX}{os.getpid()}-{secrets.token_hex(3)}"
        self._taken: set[str] = {str(next(self.subnet.hosts()))}
        self._closed = False
        _ip("netns", "add", self.name)
        try:
            _ip("-n", self.name, "link", "add", "br0", "type", "bridge")
            _ip("-n", self.name, "link", "set", "br0", "up")
        except BaseException:
            self.close()
            raise

    def reserve(self, address: str | None = None) -> str:
        """Claim `address` (or the next free one) for a sandbox about to join."""
        if address is None:
            address = next((str(a) for a in self.subnet.hosts() if str(a) not in self._taken), "")
            if not address:
                raise SandboxError(f"private network {self.name} ({self.subnet}) is full")
        elif ipaddress.IPv4Address(address) not in self.subnet or address in self._taken:
            raise InvalidArgument(f"address {address} is taken or outside {self.subnet}")
        self._taken.add(address)
        return address

    def attach(self, netns: str, address: str | None = None) -> str:
        """Plug the sandbox whose network namespace is `netns` (a /proc/PID/ns/net path) into
        the bridge, at `address` (reserved now if it was not); the address."""
        if address is None or address not in self._taken:
            address = self.reserve(address)
        outer = f"rr{secrets.token_hex(4)}"
        pid = netns.split("/")[2]
        _ip("link", "add", outer, "type", "veth", "peer", "name", "eth0", "netns", pid)
        _ip("link", "set", outer, "netns", self.name)
        _ip("-n", self.name, "link", "set", outer, "master", "br0", "up")
        inside = ["nsenter", f"--net={netns}", "ip"]
        _run([*inside, "addr", "add", f"{address}/{self.subnet.prefixlen}", "dev", "eth0"])
        _run([*inside, "link", "set", "eth0", "up"])
        return address

    def close(self) -> None:
        """Remove the namespace; the veth pairs and the bridge go with it."""
        if not self._closed:
            self._closed = True
            subprocess.run(["ip", "netns", "del", self.name], capture_output=True)

    def __enter__(self) -> PrivateNetwork:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def namespace_of(pid: int) -> str:
    """The network namespace of the first process under `pid` (itself included) that is not
    in the host's: a sandbox's, reached from its launcher."""
    host = os.readlink("/proc/self/ns/net")
    frontier = [pid]
    while frontier:
        current = frontier.pop(0)
        try:
            if os.readlink(f"/proc/{current}/ns/net") != host:
                return f"/proc/{current}/ns/net"
            for task in os.listdir(f"/proc/{current}/task"):
                children = Path(f"/proc/{current}/task/{task}/children").read_text()
                frontier += [int(c) for c in children.split()]
        except OSError:
            continue
    raise SandboxError(f"process {pid} has no network namespace of its own (network='none'?)")


def stale_networks() -> list[str]:
    """Remove private networks whose creating process is gone; their names."""
    removed = []
    for path in sorted(NETNS_DIR.glob(f"{PREFIX}*")) if NETNS_DIR.is_dir() else []:
        pid = path.name[len(PREFIX) :].split("-", 1)[0]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            subprocess.run(["ip", "netns", "del", path.name], capture_output=True)
            removed.append(path.name)
    return removed


def _ip(*args: str) -> None:
    _run(["ip", *args])


def _run(argv: list[str]) -> None:
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        raise SandboxError(f"`{' '.join(argv)}` failed: {done.stderr.strip() or done.returncode}")
