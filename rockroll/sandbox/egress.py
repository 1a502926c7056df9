"""Egress policy: which destinations a sandbox's connections may reach.

A policy is two lists of entries, `allow` and `deny` (deny wins). An entry is a domain
(`pypi.org`; `*.pythonhosted.org` for its subdomains), an address or network (`198.51.100.7`,
`10.0.0.0/8`, `2001:db8::/32`), or `*` for everything, each with an optional port or port range
after a colon (`pypi.org:443`, `[2001:db8::1]:443`, `*:8000-8100`). Domain entries are
enforced on addresses: the sandbox resolves names through the monitor's own resolver, which
answers only allowed names and remembers what it answered; a connection to an address is
allowed when a network entry allows it or when it was resolved through an allowed name (for as
long as the answer's TTL, at least a minute). An allowed name that resolves to a loopback,
private, link-local or metadata address is not remembered for it (DNS rebinding): such an
address is reached only through a network entry that names it.

Standard library only, like the supervisor that enforces it.
"""

from __future__ import annotations

import ipaddress
import threading
import time
from typing import Any, NamedTuple

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

REGISTRIES = (
    "pypi.org:443", "files.pythonhosted.org:443", "deb.debian.org:80", "deb.debian.org:443",
    "security.debian.org:80", "security.debian.org:443", "registry.npmjs.org:443",
    "registry.yarnpkg.com:443", "proxy.golang.org:443", "sum.golang.org:443",
    "index.crates.io:443", "static.crates.io:443", "crates.io:443", "rubygems.org:443",
    "index.rubygems.org:443", "repo.maven.apache.org:443", "repo1.maven.org:443",
)  # fmt: skip
# Never remembered for a name (rebinding): loopback, private, shared, link-local (metadata
# services), multicast and reserved ranges.
INTERNAL = tuple(
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
        "172.16.0.0/12", "192.0.0.0/24", "192.168.0.0/16", "224.0.0.0/4", "240.0.0.0/4",
        "::/128", "::1/128", "fc00::/7", "fe80::/10", "ff00::/8", "fd00:ec2::254/128",
    )
)  # fmt: skip
MIN_TTL = 60.0
MAX_TTL = 3600.0


class PolicyError(ValueError):
    """An entry that is not a domain, address, network or `*`; the message names it."""


class Entry(NamedTuple):
    text: str
    domain: str | None = None  # "pypi.org", or ".pythonhosted.org" for a wildcard
    network: Network | None = None
    everything: bool = False
    ports: tuple[int, int] | None = None  # inclusive range; None: every port

    def port_ok(self, port: int) -> bool:
        return self.ports is None or self.ports[0] <= port <= self.ports[1]

    def names(self, name: str) -> bool:
        if self.everything:
            return True
        if self.domain is None:
            return False
        if self.domain.startswith("."):
            return name.endswith(self.domain)
        return name == self.domain

    def covers(self, address: Address) -> bool:
        return self.everything or (self.network is not None and address in self.network)


def _ports(text: str, entry: str) -> tuple[int, int]:
    low, _, high = text.partition("-")
    try:
        lo, hi = int(low), int(high or low)
    except ValueError:
        raise PolicyError(f"egress entry {entry!r}: {text!r} is not a port or range") from None
    if not 0 < lo <= hi < 65536:
        raise PolicyError(f"egress entry {entry!r}: ports run from 1 to 65535")
    return lo, hi


def parse_entry(text: str) -> Entry:
    if not isinstance(text, str) or not text.strip():
        raise PolicyError(f"egress entry {text!r}: give a domain, an address, a network or *")
    raw = text.strip().lower()
    if "://" in raw:
        raise PolicyError(
            f"egress entry {text!r}: not a domain (pypi.org, *.example.com), an address or "
            "network (10.0.0.0/8), or *; a URL's host alone is the entry"
        )
    host, ports = raw, None
    if raw.startswith("["):  # [v6]:port
        host, _, rest = raw[1:].partition("]")
        if rest:
            ports = _ports(rest.lstrip(":"), text)
    elif raw.count(":") == 1:
        host, port = raw.split(":")
        ports = _ports(port, text)
    if host == "*":
        return Entry(text, everything=True, ports=ports)
    try:
        return Entry(text, network=ipaddress.ip_network(host, strict=False), ports=ports)
    except ValueError:
        pass
    name = host.rstrip(".")
    wildcard = name.startswith("*.")
    if wildcard:
        name = name[2:]
    labels = name.split(".")
    if not name or not all(lab and len(lab) < 64 and _label(lab) for lab in labels):
        raise PolicyError(
            f"egress entry {text!r}: not a domain (pypi.org, *.example.com), an address or "
            "network (10.0.0.0/8), or *"
        )
    return Entry(text, domain=("." + name) if wildcard else name, ports=ports)


def _label(label: str) -> bool:
    return all(c.isalnum() or c in "-_" for c in label) and not label.startswith("-")


def internal(address: Address) -> bool:
    mapped = getattr(address, "ipv4_mapped", None)
    address = mapped or address
    return any(address in net for net in INTERNAL if net.version == address.version)


class Policy:
    """A sandbox's egress: its entries, and the answers its resolver gave for allowed names."""

    def __init__(
        self,
        mode: str,  # "none", "full", or "policy"
        allow: tuple[Entry, ...] = (),
        deny: tuple[Entry, ...] = (),
        via: str | None = None,  # the network namespace connections leave from (None: host's)
        resolvers: tuple[str, ...] = (),  # upstream DNS servers (none: the host's resolv.conf)
    ) -> None:
        self.mode, self.allow, self.deny, self.via, self.resolvers = (
            mode, allow, deny, via, resolvers
        )  # fmt: skip
        self.learned: dict[str, dict[str, float]] = {}  # address -> name -> until
        self.lock = threading.Lock()

    @classmethod
    def from_setting(cls, setting: Any) -> Policy:
        """From a sandbox's `network` setting: "none", "full", "registries", or a table of
        `allow`, `deny`, `via` and `resolvers`."""
        if setting in ("none", "full"):
            return cls(str(setting))
        if setting == "registries":
            setting = {"allow": list(REGISTRIES)}
        if not isinstance(setting, dict):
            raise PolicyError(
                f"network {setting!r}: give 'none', 'registries', 'full', or allow/deny lists"
            )
        unknown = sorted(set(setting) - {"allow", "deny", "via", "resolvers"})
        if unknown:
            raise PolicyError(
                f"network: unknown field {unknown[0]!r} (allow, deny, via, resolvers)"
            )
        for name in ("allow", "deny", "resolvers"):
            value = setting.get(name) or []
            if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
                raise PolicyError(f"network.{name} must be a list of strings")
        for server in setting.get("resolvers") or ():
            try:
                ipaddress.ip_address(server)
            except ValueError:
                raise PolicyError(f"network.resolvers: {server!r} is not an IP address") from None
        via = setting.get("via")
        if via is not None and not isinstance(via, str):
            raise PolicyError("network.via must be the path of a network namespace")
        return cls(
            "policy",
            tuple(parse_entry(e) for e in setting.get("allow") or ()),
            tuple(parse_entry(e) for e in setting.get("deny") or ()),
            via,
            tuple(setting.get("resolvers") or ()),
        )

    def name_allowed(self, name: str) -> bool:
        """Whether the resolver answers `name` (an allowed domain not denied)."""
        if self.mode == "full":
            return True
        if self.mode != "policy":
            return False
        name = name.lower().rstrip(".")
        if any(e.names(name) and e.ports is None for e in self.deny):
            return False
        return any(e.names(name) for e in self.allow)

    def learn(self, name: str, addresses: list[tuple[str, float]]) -> list[str]:
        """Remember the resolver's answers for an allowed name; the ones kept (internal
        addresses are not, unless a network entry allows them)."""
        kept = []
        now = time.monotonic()
        name = name.lower().rstrip(".")
        with self.lock:
            for text, ttl in addresses:
                address = ipaddress.ip_address(text)
                if internal(address) and not any(e.covers(address) for e in self.allow):
                    continue
                until = now + min(max(ttl, MIN_TTL), MAX_TTL)
                self.learned.setdefault(str(address), {})[name] = until
                kept.append(str(address))
        return kept

    def decide(self, address: str, port: int) -> tuple[bool, str]:
        """Whether a connection to address:port may go out, and why."""
        if self.mode == "full":
            return True, "network full"
        if self.mode != "policy":
            return False, f"network {self.mode}"
        addr = ipaddress.ip_address(address)
        addr = getattr(addr, "ipv4_mapped", None) or addr
        now = time.monotonic()
        with self.lock:
            names = [n for n, until in self.learned.get(str(addr), {}).items() if until > now]
        for e in self.deny:
            if e.port_ok(port) and (e.covers(addr) or any(e.names(n) for n in names)):
                return False, f"denied by {e.text}"
        for e in self.allow:
            if e.port_ok(port) and e.covers(addr):
                return True, f"allowed by {e.text}"
        for e in self.allow:
            for n in names:
                if e.names(n) and e.port_ok(port):
                    return True, f"{n} allowed by {e.text}"
        if names:
            return False, f"port {port} is not allowed for {names[0]}"
        return False, "not resolved through an allowed name"
