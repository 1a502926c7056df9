"""The default tool set, and tools by name."""

from __future__ import annotations

from rockroll.agent.tools.base import Tool
from rockroll.agent.tools.edit import Edit
from rockroll.agent.tools.files import ReadFile, WriteFile
from rockroll.agent.tools.plan import Submit, Todo
from rockroll.agent.tools.search import Glob, Grep, ListDir
from rockroll.agent.tools.shell import Bash


def default_tools() -> list[Tool]:
    """The tools an agent gets unless told otherwise, in the order the model sees them."""
    return [Bash(), ReadFile(), WriteFile(), Edit(), Glob(), Grep(), ListDir(), Todo(), Submit()]


def tools_by_name(tools: list[Tool]) -> dict[str, Tool]:
    out: dict[str, Tool] = {}
    for tool in tools:
        if tool.name in out:
            raise ValueError(f"two tools are named {tool.name!r}")
        out[tool.name] = tool
    return out
