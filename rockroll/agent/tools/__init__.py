"""The tools an agent acts with inside a sandbox, each described by a JSON schema for the model.

Every tool answers with a `ToolResult` the model can read and act on: errors say what was wrong
and what to try instead, long outputs keep their head and tail, and nothing raises for a
mistake the model made. `run_tool` is the one entry point a caller needs: it validates the
arguments against the schema first (`validation.py`, with `jsonschema`), so a tool's `run` only
ever sees well-typed arguments.

One module per family: `shell` (bash), `files` (read_file, write_file), `edit`, `search` (glob,
grep, list_dir), `plan` (todo, submit); `base` holds `Tool`, `ToolResult` and `ToolContext`,
and `rules` the `CommandRules` that decide which shell commands may run.
"""

from rockroll.agent.tools.base import Tool, ToolContext, ToolResult, truncate
from rockroll.agent.tools.edit import Edit
from rockroll.agent.tools.files import ReadFile, WriteFile
from rockroll.agent.tools.plan import TODO_STATUSES, Submit, Todo, render_todo
from rockroll.agent.tools.registry import default_tools, tools_by_name
from rockroll.agent.tools.rules import CommandRules
from rockroll.agent.tools.search import Glob, Grep, ListDir
from rockroll.agent.tools.shell import Bash
from rockroll.agent.tools.validation import call_problem, run_tool, validate

__all__ = [
    "TODO_STATUSES",
    "Bash",
    "CommandRules",
    "Edit",
    "Glob",
    "Grep",
    "ListDir",
    "ReadFile",
    "Submit",
    "Todo",
    "Tool",
    "ToolContext",
    "ToolResult",
    "WriteFile",
    "call_problem",
    "default_tools",
    "render_todo",
    "run_tool",
    "tools_by_name",
    "truncate",
    "validate",
]
