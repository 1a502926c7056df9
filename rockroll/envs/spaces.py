"""Gymnasium spaces of a task environment (needs the `gym` extra): observations are text, actions
are calls of the agent's tools.

`Text` is Gymnasium's text space for any string up to a length (Gymnasium's own `Text` holds
only the characters of its charset; a terminal prints any). `ToolCalls` holds the tool calls
the environment accepts, `{"tool": NAME, "arguments": {...}}` valid against the tool's schema;
its samples are harmless read-only shell commands, for checkers and smoke tests, not a policy.
"""

from __future__ import annotations

import string
from typing import Any

from gymnasium import spaces

from rockroll.agent.tools import Tool, call_problem

SAMPLE_COMMANDS = ("pwd", "ls", "ls -a /", "echo ready", "id -u", "cat /etc/os-release")
"""What `ToolCalls.sample()` draws from (each prints the same on every run in a fresh sandbox)."""


class Text(spaces.Text):
    """Any text of at most `max_length` characters; samples are printable ASCII."""

    def __init__(self, max_length: int, *, seed: int | None = None) -> None:
        super().__init__(max_length, min_length=0, charset=string.printable, seed=seed)

    def contains(self, x: Any) -> bool:
        return isinstance(x, str) and len(x) <= self.max_length

    def __repr__(self) -> str:
        return f"Text(max_length={self.max_length})"


class ToolCalls(spaces.Space[dict]):
    """The calls of `tools` their schemas accept: `{"tool": NAME, "arguments": {...}}`."""

    def __init__(self, tools: dict[str, Tool], *, seed: int | None = None) -> None:
        super().__init__(shape=None, dtype=None, seed=seed)
        self.tools = tools

    @property
    def is_np_flattenable(self) -> bool:
        return False

    def contains(self, x: Any) -> bool:
        if not isinstance(x, dict) or set(x) != {"tool", "arguments"}:
            return False
        tool, arguments = x["tool"], x["arguments"]
        if not isinstance(tool, str) or not isinstance(arguments, dict):
            return False
        return call_problem(self.tools, tool, arguments) is None

    def sample(self, mask: Any | None = None, probability: Any | None = None) -> dict:
        if mask is not None or probability is not None:
            raise NotImplementedError("ToolCalls.sample() takes no mask or probability")
        if "bash" not in self.tools:
            raise NotImplementedError("ToolCalls.sample() draws shell commands: no bash tool here")
        command = SAMPLE_COMMANDS[int(self.np_random.integers(len(SAMPLE_COMMANDS)))]
        return {"tool": "bash", "arguments": {"command": command}}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ToolCalls) and sorted(self.tools) == sorted(other.tools)

    def __hash__(self) -> int:
        return hash(tuple(sorted(self.tools)))

    def __repr__(self) -> str:
        return f"ToolCalls({', '.join(self.tools)})"
