"""Rules over a sandbox's events: each rule is data (id, class, severity, rationale, when it
matches, what to do), checked against every exec and connection the monitor sees.

A rule matches an event when every condition it names holds:

- `on`: "exec" or "connect" (required);
- `program`: names, one of which is the base name of the program (exec: the file run and its
  argv[0]; connect: the connecting process's);
- `args`: a regular expression searched in the command line (argv joined by spaces), or a
  list of them that must all be found;
- `unless`: a regular expression that, found in the command line, keeps the rule from matching
  (`crontab -l` is not persistence);
- `port`, `address`: the destination's port among these, its address in one of these networks
  (CIDR); `external`: true for a destination outside the sandbox (not loopback) (connect only);
- `stdio_socket`: true for a program whose standard input or output is a network socket (exec);
- `distinct_hosts` / `distinct_ports` with `window` (seconds): the sandbox has tried to reach at
  least that many different hosts / ports within the window (connect only).

`action` is what happens on a match: "record" (the event carries the rule), "flag" (the event
is marked for review), "refuse" (the call fails), "kill" (the command's processes are killed),
"end" (killed, and the episode is to end). The strongest action of the matching rules wins.

Standard library only, like the supervisor that runs it.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections import deque
from dataclasses import dataclass, field
from typing import Any

ACTIONS = ("record", "flag", "refuse", "kill", "end")
SEVERITIES = ("low", "medium", "high", "critical")
KINDS = ("exec", "connect")
FIELDS = {
    "id", "class", "severity", "rationale", "on", "action", "program", "args", "unless", "port",
    "address", "external", "stdio_socket", "distinct_hosts", "distinct_ports", "window",
}  # fmt: skip


class RuleError(ValueError):
    """A rule that cannot be used; the message names the rule and the field."""


@dataclass
class Rule:
    id: str
    klass: str
    severity: str
    rationale: str
    on: str
    action: str = "flag"
    program: frozenset[str] = frozenset()
    args: tuple[re.Pattern[str], ...] = ()
    unless: re.Pattern[str] | None = None
    external: bool | None = None
    port: frozenset[int] = frozenset()
    address: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    stdio_socket: bool | None = None
    distinct_hosts: int = 0
    distinct_ports: int = 0
    window: float = 60.0
    _seen: deque[tuple[float, str, int]] = field(default_factory=deque, repr=False)

    def matches(self, event: dict[str, Any]) -> bool:
        if event.get("kind") != self.on:
            return False
        if self.program and not self.program & programs(event):
            return False
        line = " ".join(event.get("argv") or ())
        if not all(p.search(line) for p in self.args):
            return False
        if self.unless is not None and self.unless.search(line):
            return False
        if self.on == "connect" and not self._destination(event):
            return False
        wants_socket = self.stdio_socket
        return wants_socket is None or wants_socket == bool(event.get("stdio_socket"))

    def _destination(self, event: dict[str, Any]) -> bool:
        port = int(event.get("port") or 0)
        if self.port and port not in self.port:
            return False
        try:
            addr = ipaddress.ip_address(str(event.get("address", "")))
        except ValueError:
            return False
        if self.address and not any(addr in net for net in self.address):
            return False
        if self.external is not None and self.external == addr.is_loopback:
            return False
        if self.distinct_hosts or self.distinct_ports:
            return self._sweep(float(event.get("time") or 0.0), str(event.get("address")), port)
        return True

    def _sweep(self, now: float, host: str, port: int) -> bool:
        self._seen.append((now, host, port))
        while self._seen and self._seen[0][0] < now - self.window:
            self._seen.popleft()
        hosts = {h for _, h, _ in self._seen}
        ports = {(h, p) for _, h, p in self._seen}
        return (bool(self.distinct_hosts) and len(hosts) >= self.distinct_hosts) or (
            bool(self.distinct_ports) and len(ports) >= self.distinct_ports
        )


def programs(event: dict[str, Any]) -> set[str]:
    """The base names an event's program goes by: the file run and its argv[0]."""
    names = {os.path.basename(str(event.get("path") or ""))}
    argv = event.get("argv") or []
    if argv:
        names.add(os.path.basename(str(argv[0])))
    names.discard("")
    return names


def parse_rule(data: dict[str, Any], where: str = "rule") -> Rule:
    """One rule from its data; RuleError names the rule and the field that is wrong."""
    if not isinstance(data, dict):
        raise RuleError(f"{where}: a rule is a table of fields, not {type(data).__name__}")
    rid = data.get("id")
    if not isinstance(rid, str) or not rid:
        raise RuleError(f"{where}: field 'id' is required (a short name like 'miner.xmrig')")
    where = f"rule {rid!r}"
    unknown = sorted(set(data) - FIELDS)
    if unknown:
        known = ", ".join(sorted(FIELDS))
        raise RuleError(f"{where}: unknown field {unknown[0]!r} (fields: {known})")

    def choice(name: str, options: tuple[str, ...], default: str | None = None) -> str:
        value = data.get(name, default)
        if value not in options:
            allowed = ", ".join(options)
            raise RuleError(f"{where}: field {name!r} must be one of {allowed}, not {value!r}")
        return str(value)

    def strings(name: str) -> list[str]:
        value = data.get(name, [])
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise RuleError(f"{where}: field {name!r} must be a list of strings")
        return value

    on = choice("on", KINDS)
    rule = Rule(
        id=rid,
        klass=str(data.get("class") or rid.split(".")[0]),
        severity=choice("severity", SEVERITIES, "medium"),
        rationale=str(data.get("rationale", "")),
        on=on,
        action=choice("action", ACTIONS, "flag"),
        program=frozenset(strings("program")),
    )

    def pattern(name: str, text: str) -> re.Pattern[str]:
        try:
            return re.compile(text)
        except re.error as e:
            raise RuleError(f"{where}: field {name!r} is not a regular expression: {e}") from None

    rule.args = tuple(pattern("args", p) for p in strings("args"))
    if "unless" in data:
        rule.unless = pattern("unless", str(data["unless"]))
    try:
        rule.port = frozenset(int(p) for p in data.get("port", []))
        rule.address = tuple(ipaddress.ip_network(a, strict=False) for a in strings("address"))
    except (TypeError, ValueError) as e:
        raise RuleError(f"{where}: field 'port' or 'address' is wrong: {e}") from None
    if "stdio_socket" in data:
        rule.stdio_socket = bool(data["stdio_socket"])
    if "external" in data:
        rule.external = bool(data["external"])
    for name in ("distinct_hosts", "distinct_ports", "window"):
        if name in data:
            value = data[name]
            if not isinstance(value, int | float) or value <= 0:
                raise RuleError(f"{where}: field {name!r} must be a positive number")
            setattr(rule, name, int(value) if name != "window" else float(value))
    network = rule.port or rule.address or rule.external is not None
    if on == "exec" and (network or rule.distinct_hosts or rule.distinct_ports):
        raise RuleError(f"{where}: destination fields need on = 'connect'")
    return rule


class Rules:
    """A rule set, checked in order; `check` is what the supervisor calls per event."""

    def __init__(self, data: list[dict[str, Any]] | None = None) -> None:
        self.rules = [parse_rule(d, f"rule {i + 1}") for i, d in enumerate(data or [])]
        ids = [r.id for r in self.rules]
        dup = next((i for i in ids if ids.count(i) > 1), None)
        if dup is not None:
            raise RuleError(f"rule {dup!r} is defined twice")

    def check(self, event: dict[str, Any]) -> list[Rule]:
        return [r for r in self.rules if r.matches(event)]


def strongest(rules: list[Rule]) -> str | None:
    """The action that wins among matching rules, or None when none matched."""
    if not rules:
        return None
    return max((r.action for r in rules), key=ACTIONS.index)
