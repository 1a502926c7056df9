"""`CommandRules`: which shell commands the agent may run (yolo, or ask with allow/deny rules)."""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

_SEGMENT_SPLIT = re.compile(r"\|\||&&|[;|&\n]")


@dataclass
class CommandRules:
    """Which shell commands the agent may run.

    Patterns are shell-style (`fnmatch`) and matched against the whole command and against each
    simple command in it (split at `;`, `&&`, `||`, `|`, `&`, newlines), so `true && curl x`
    does not slip past a `curl *` deny rule, and an allow rule `git *` does not approve
    `git status && rm -rf x`.
    """

    mode: Literal["yolo", "ask"] = "yolo"
    allow: list[str] = field(default_factory=list)
    deny: list[str] = field(default_factory=list)
    ask: Callable[[str], bool] | None = None

    def __post_init__(self) -> None:
        if self.mode not in ("yolo", "ask"):
            raise ValueError(f"rules mode must be 'yolo' or 'ask', got {self.mode!r}")

    def check(self, command: str) -> str | None:
        """The reason `command` is refused, or None when it may run."""
        whole = command.strip()
        parts = _segments(whole)
        for pattern in self.deny:
            if any(fnmatch.fnmatchcase(p, pattern) for p in [whole, *parts]):
                return f"refused by the deny rule {pattern!r}"
        if self.mode == "yolo" or self._allowed(whole, parts):
            return None
        if self.ask is None:
            return "refused: ask mode, no allow rule matches and no one is there to approve it"
        if not self.ask(command):
            return "refused by the user (ask mode); try another way or ask why"
        return None

    def _allowed(self, whole: str, parts: list[str]) -> bool:
        # Command substitution can hide anything inside an allowed prefix: always ask.
        if "$(" in whole or "`" in whole or not parts:
            return False
        return all(any(fnmatch.fnmatchcase(p, pat) for pat in self.allow) for p in parts)

    @classmethod
    def load(cls, path: str | Path, ask: Callable[[str], bool] | None = None) -> CommandRules:
        """Rules saved by `save`; a missing file gives the default rules (first run)."""
        p = Path(path)
        if not p.exists():
            return cls(ask=ask)
        data = json.loads(p.read_text())
        return cls(
            mode=data.get("mode", "yolo"),
            allow=list(data.get("allow", [])),
            deny=list(data.get("deny", [])),
            ask=ask,
        )

    def save(self, path: str | Path) -> None:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        data = {"mode": self.mode, "allow": self.allow, "deny": self.deny}
        p.write_text(json.dumps(data, indent=2) + "\n")


def _segments(command: str) -> list[str]:
    return [s.strip() for s in _SEGMENT_SPLIT.split(command) if s.strip()]
