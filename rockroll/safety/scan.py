"""Find what the rules catch in a sandbox's audit log, a trajectory, or a run folder of them.

A sandbox's events (`$ROCKROLL_HOME/audit/<id>.events.jsonl`) are the monitor's exec and
connect events, checked again here with the rules given; its audit log (`<id>.jsonl`) holds the
host's own commands, checked as typed; a trajectory (ATIF JSON)
holds the shell commands an agent typed, checked as the exec of `bash -c COMMAND` they became.
A folder is searched for both. What was typed is not what ran: a trajectory's findings miss
whatever a script or a decoded string started, which only the audit log shows.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rockroll.errors import InvalidArgument
from rockroll.sandbox.watch import KINDS, Rules, strongest

SHELL_ARGS = ("command", "cmd", "script")  # the argument names shell tools use


@dataclass
class Finding:
    source: str  # file, and line or step
    event: dict[str, Any]
    rules: list[dict[str, str]]

    def as_json(self) -> dict[str, Any]:
        return {"source": self.source, **self.event, "rules": self.rules}


def events_in(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, event) for every exec and connect event and typed command under `path`."""
    if path.is_dir():
        for child in sorted(path.rglob("*")):
            if child.suffix in (".jsonl", ".json") and child.is_file():
                yield from events_in(child)
        return
    try:
        text = path.read_text(errors="replace")
    except OSError as e:
        raise InvalidArgument(f"{path}: cannot read it: {e.strerror}") from None
    if path.suffix == ".jsonl":
        for number, line in enumerate(text.splitlines(), 1):
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            event = _audit_event(entry) if isinstance(entry, dict) else None
            if event is not None:
                yield f"{path}:{number}", event
        return
    try:
        data = json.loads(text)
    except ValueError:
        return
    if isinstance(data, dict) and str(data.get("schema_version", "")).startswith("ATIF"):
        for number, step in enumerate(data.get("steps") or [], 1):
            for call in step.get("tool_calls") or []:
                args = call.get("arguments") or {}
                command = next((args[k] for k in SHELL_ARGS if isinstance(args.get(k), str)), None)
                if command is not None:
                    event = {"kind": "exec", "argv": ["bash", "-c", command], "typed": True}
                    yield f"{path}: step {step.get('step_id', number)}", event


def _audit_event(entry: dict[str, Any]) -> dict[str, Any] | None:
    if entry.get("kind") in KINDS:
        return entry
    if "kind" not in entry and isinstance(entry.get("command"), str):  # the host's command
        return {"kind": "exec", "argv": ["bash", "-c", entry["command"]], "typed": True,
                "time": entry.get("time")}  # fmt: skip
    return None


def scan(path: str | Path, rules: list[dict[str, Any]]) -> list[Finding]:
    """Every event under `path` that a rule matches (checked again with `rules`)."""
    path = Path(path)
    if not path.exists():
        raise InvalidArgument(f"{path}: no such file or folder (give an audit log, a trajectory "
                              "or a run folder)")  # fmt: skip
    engine = Rules(rules)
    found = []
    for where, event in events_in(path):
        matched = engine.check(dict(event))
        if matched:
            hits = [
                {"id": r.id, "class": r.klass, "severity": r.severity, "action": r.action}
                for r in matched
            ]
            clean = {k: v for k, v in event.items() if k not in ("rules", "action")}
            found.append(Finding(where, clean | {"action": strongest(matched)}, hits))
    return found
