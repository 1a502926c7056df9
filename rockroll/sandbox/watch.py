"""Rules over a sandbox's events: each rule is data (id, class, severity, rationale, when it
matches, what to do), checked against every exec and connection the monitor sees.

A rule matches an event when every condition it names holds:

- `on`: "exec", "connect", "write" (a write to a watched persistence file, filewatch.py) or
  "cpu" (a program that has used a lot of CPU time, sampled by the supervisor) (required);
- `program`: names, one of which is the base name of the program (exec: the file run and its
  argv[0]; connect: the connecting process's);
- `args`: a regular expression searched in the command line (argv joined by spaces), or a
  list of them that must all be found;
- `unless`: a regular expression that, found in the command line, keeps the rule from matching
  (`crontab -l` is not persistence);
- `port`, `address`: the destination's port among these, its address in one of these networks
  (CIDR); `external`: true for a destination outside the sandbox (not loopback) (connect only);
- `path`, `content`: regular expressions searched in a written file's path and in its end
  (write); `path` also in the file a program was started from (cpu);
- `cpu_seconds`, `cpu_share`: the program has used at least this much CPU time (seconds, user
  and system) and at least this share of one core over its life (cpu; `cpu_seconds` required);
- `beside`: a table of `program` and `args` that another program must match, started by the same
  parent within `window` seconds (default 5): the other end of a pipeline (`env | grep TOKEN`
  run from a decoded script is two execs, each harmless alone) (exec only);
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
from collections.abc import Iterable
from typing import Any

ACTIONS = ("record", "flag", "refuse", "kill", "end")
SEVERITIES = ("low", "medium", "high", "critical")
KINDS = ("exec", "connect", "write", "cpu")
RECENT_EVENTS = 64  # exec events kept per parent for `beside` rules
RECENT_PARENTS = 1024
RECENT_SECONDS = 60.0
FIELDS = {
    "id", "class", "severity", "rationale", "on", "action", "program", "args", "unless", "port",
    "address", "external", "stdio_socket", "distinct_hosts", "distinct_ports", "window", "path",
    "content", "beside", "cpu_seconds", "cpu_share",
}  # fmt: skip


class RuleError(ValueError):
    """A rule that cannot be used; the message names the rule and the field."""


class Rule:
    """One parsed rule (see the module's docstring for its fields); `parse_rule` makes them.
    A plain class: dataclasses would cost the supervisor's start several milliseconds."""

    def __init__(self, id: str, klass: str, severity: str, rationale: str, on: str) -> None:
        self.id, self.klass, self.severity, self.rationale, self.on = (
            id, klass, severity, rationale, on
        )  # fmt: skip
        self.action = "flag"
        self.program: frozenset[str] = frozenset()
        self.args: tuple[re.Pattern[str], ...] = ()
        self.unless: re.Pattern[str] | None = None
        self.external: bool | None = None
        self.path: re.Pattern[str] | None = None
        self.content: re.Pattern[str] | None = None
        self.beside: Rule | None = None  # what a sibling exec must match (program, args)
        self.port: frozenset[int] = frozenset()
        self.address: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
        self.stdio_socket: bool | None = None
        self.distinct_hosts = 0
        self.distinct_ports = 0
        self.window = 60.0
        self.cpu_seconds = 0.0
        self.cpu_share = 0.0
        self._seen: deque[tuple[float, str, int]] = deque()

    def __repr__(self) -> str:
        return f"Rule({self.id!r}, on={self.on!r}, action={self.action!r})"

    def matches(self, event: dict[str, Any] | View, recent: Iterable[View] = ()) -> bool:
        """Whether `event` matches, `recent` being the exec events seen beside it (same
        parent) before it."""
        view = event if isinstance(event, View) else View(event)
        if self.beside is None:
            return self._own(view)
        mine, theirs = self._own(view), self.beside._own(view)
        if not (mine or theirs):  # most events: no sibling needs looking at
            return False
        return any(
            self._sibling(view, v) and ((mine and self.beside._own(v)) or (theirs and self._own(v)))
            for v in recent
        )

    def _sibling(self, view: View, other: View) -> bool:
        return other.event.get("pid") != view.event.get("pid") and (
            abs(other.time - view.time) <= self.window
        )

    def _own(self, view: View) -> bool:
        event = view.event
        if event.get("kind") != self.on:
            return False
        if self.on == "write":
            return bool(
                (self.path is None or self.path.search(str(event.get("path", ""))))
                and (self.content is None or self.content.search(str(event.get("tail", ""))))
            )
        if self.on == "cpu" and not self._heavy(event):
            return False
        if self.program and not self.program & view.names:
            return False
        line = view.line
        if not all(p.search(line) for p in self.args):
            return False
        if self.unless is not None and self.unless.search(line):
            return False
        if self.on == "connect" and not self._destination(event):
            return False
        wants_socket = self.stdio_socket
        return wants_socket is None or wants_socket == bool(event.get("stdio_socket"))

    def _heavy(self, event: dict[str, Any]) -> bool:
        return (
            float(event.get("cpu_seconds") or 0.0) >= self.cpu_seconds
            and float(event.get("cpu_share") or 0.0) >= self.cpu_share
            and (self.path is None or bool(self.path.search(str(event.get("path", "")))))
        )

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


class View:
    """An event with what every rule reads of it worked out once."""

    def __init__(self, event: dict[str, Any]) -> None:
        self.event = event
        self.names = programs(event)
        self.line = " ".join(event.get("argv") or ())
        self.time = float(event.get("time") or 0.0)


def programs(event: dict[str, Any]) -> set[str]:
    """The base names an event's program goes by: the file run and its argv[0]."""
    names = {os.path.basename(str(event.get("path") or ""))}
    argv = event.get("argv") or []
    if argv:
        names.add(os.path.basename(str(argv[0])))
    names.discard("")
    return names


class _Fields:
    """Reads one rule's fields; every error names the rule and the field."""

    def __init__(self, data: dict[str, Any], where: str) -> None:
        self.data, self.where = data, where

    def fail(self, text: str) -> RuleError:
        return RuleError(f"{self.where}: {text}")

    def choice(self, name: str, options: tuple[str, ...], default: str | None = None) -> str:
        value = self.data.get(name, default)
        if value not in options:
            allowed = ", ".join(options)
            raise self.fail(f"field {name!r} must be one of {allowed}, not {value!r}")
        return str(value)

    def strings(self, name: str) -> list[str]:
        value = self.data.get(name, [])
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.fail(f"field {name!r} must be a list of strings")
        return value

    def pattern(self, name: str, text: str) -> re.Pattern[str]:
        try:
            return re.compile(text)
        except re.error as e:
            raise self.fail(f"field {name!r} is not a regular expression: {e}") from None

    def number(self, name: str) -> float | None:
        if name not in self.data:
            return None
        value = self.data[name]
        if not isinstance(value, int | float) or value <= 0:
            raise self.fail(f"field {name!r} must be a positive number")
        return float(value)


def parse_rule(data: dict[str, Any], where: str = "rule") -> Rule:
    """One rule from its data; RuleError names the rule and the field that is wrong."""
    if not isinstance(data, dict):
        raise RuleError(f"{where}: a rule is a table of fields, not {type(data).__name__}")
    rid = data.get("id")
    if not isinstance(rid, str) or not rid:
        raise RuleError(f"{where}: field 'id' is required (a short name like 'miner.xmrig')")
    f = _Fields(data, f"rule {rid!r}")
    unknown = sorted(set(data) - FIELDS)
    if unknown:
        raise f.fail(f"unknown field {unknown[0]!r} (fields: {', '.join(sorted(FIELDS))})")
    on = f.choice("on", KINDS)
    rule = Rule(
        rid,
        str(data.get("class") or rid.split(".")[0]),
        f.choice("severity", SEVERITIES, "medium"),
        str(data.get("rationale", "")),
        on,
    )
    rule.action = f.choice("action", ACTIONS, "flag")
    rule.program = frozenset(f.strings("program"))
    rule.args = tuple(f.pattern("args", p) for p in f.strings("args"))
    if "unless" in data:
        rule.unless = f.pattern("unless", str(data["unless"]))
    if "stdio_socket" in data:
        rule.stdio_socket = bool(data["stdio_socket"])
    _write_fields(rule, f)
    _cpu_fields(rule, f)
    _destination_fields(rule, f)
    if "beside" in data:
        other = data["beside"]
        if on != "exec" or not isinstance(other, dict) or set(other) - {"program", "args"}:
            raise f.fail("field 'beside' is a table of program and args (on exec)")
        rule.beside = parse_rule({"id": f"{rid}.beside", "on": "exec", **other}, f.where)
        if "window" not in data:
            rule.window = 5.0
    return rule


def _write_fields(rule: Rule, f: _Fields) -> None:
    for name in ("path", "content"):
        if name in f.data:
            if rule.on != "write" and (name, rule.on) != ("path", "cpu"):
                raise f.fail(f"field {name!r} needs on = 'write'")
            setattr(rule, name, f.pattern(name, str(f.data[name])))
    if rule.on == "write" and rule.action not in ("record", "flag", "end"):
        raise f.fail(
            "a write has happened when it is seen, and no process is named: its action is "
            "record, flag or end"
        )


def _cpu_fields(rule: Rule, f: _Fields) -> None:
    for name in ("cpu_seconds", "cpu_share"):
        if name in f.data and rule.on != "cpu":
            raise f.fail(f"field {name!r} needs on = 'cpu'")
    if rule.on != "cpu":
        return
    seconds = f.number("cpu_seconds")
    if seconds is None:
        raise f.fail("field 'cpu_seconds' is required on cpu (the CPU time that makes a match)")
    rule.cpu_seconds = seconds
    rule.cpu_share = f.number("cpu_share") or 0.0
    if rule.action == "refuse":
        raise f.fail(
            "a program's CPU time is sampled, not a call: its action is record, flag, kill or end"
        )


def _destination_fields(rule: Rule, f: _Fields) -> None:
    try:
        rule.port = frozenset(int(p) for p in f.data.get("port", []))
        rule.address = tuple(ipaddress.ip_network(a, strict=False) for a in f.strings("address"))
    except (TypeError, ValueError) as e:
        raise f.fail(f"field 'port' or 'address' is wrong: {e}") from None
    if "external" in f.data:
        rule.external = bool(f.data["external"])
    rule.distinct_hosts = int(f.number("distinct_hosts") or 0)
    rule.distinct_ports = int(f.number("distinct_ports") or 0)
    rule.window = f.number("window") or rule.window
    network = rule.port or rule.address or rule.external is not None
    if rule.on == "exec" and (network or rule.distinct_hosts or rule.distinct_ports):
        raise f.fail("destination fields need on = 'connect'")


class Rules:
    """A rule set, checked in order; `check` is what the supervisor calls per event."""

    def __init__(self, data: list[dict[str, Any]] | None = None) -> None:
        self.rules = [parse_rule(d, f"rule {i + 1}") for i, d in enumerate(data or [])]
        self.recent: dict[Any, deque[View]] = {}  # parent pid -> its children's execs
        self.by_kind: dict[str, list[Rule]] = {}
        for rule in self.rules:
            self.by_kind.setdefault(rule.on, []).append(rule)
        # the least CPU time (seconds) a cpu rule asks for: when a program is worth a look
        self.cpu_first = min((r.cpu_seconds for r in self.by_kind.get("cpu", ())), default=None)
        ids = [r.id for r in self.rules]
        dup = next((i for i in ids if ids.count(i) > 1), None)
        if dup is not None:
            raise RuleError(f"rule {dup!r} is defined twice")

    def check(self, event: dict[str, Any]) -> list[Rule]:
        """The rules `event` matches; exec events are kept a while, by parent, for `beside`
        rules."""
        view = View(event)
        parent = event.get("ppid")
        recent = self.recent.get(parent, ()) if parent is not None else ()
        rules = self.by_kind.get(str(event.get("kind")), ())
        matched = [r for r in rules if r.matches(view, recent)]
        if event.get("kind") == "exec" and parent is not None:
            kept = self.recent.setdefault(parent, deque(maxlen=RECENT_EVENTS))
            kept.append(view)
            while kept and view.time - kept[0].time > RECENT_SECONDS:
                kept.popleft()
            if len(self.recent) > RECENT_PARENTS:
                self.recent.pop(next(iter(self.recent)))
        return matched


def strongest(rules: list[Rule]) -> str | None:
    """The action that wins among matching rules, or None when none matched."""
    if not rules:
        return None
    return max((r.action for r in rules), key=ACTIONS.index)
