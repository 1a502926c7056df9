"""What every tool is built on: the `Tool` base class, its `ToolResult` and the `ToolContext`
the tools of one episode share, and the small schema and output helpers they use."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import BaseModel, Field

from rockroll.agent.tools.rules import CommandRules
from rockroll.errors import SandboxError
from rockroll.sandbox.files import sandbox_path
from rockroll.sandbox.sdk import Sandbox
from rockroll.sandbox.session import Session


class ToolResult(BaseModel):
    """What a tool call produced; `output` is what the model sees next."""

    output: str
    error: bool = False
    done: bool = Field(False, description="the agent submitted: the episode ends")
    meta: dict = Field(default_factory=dict)


@dataclass
class ToolContext:
    """The state tools share within one episode; `workdir` defaults to the sandbox's."""

    sandbox: Sandbox
    session: Session | None = None
    workdir: str = ""
    todo: list[dict] = field(default_factory=list)
    rules: CommandRules = field(default_factory=CommandRules)
    read_files: set[str] = field(default_factory=set)
    max_output: int = 16000
    command_timeout: float = 120.0

    def __post_init__(self) -> None:
        if not self.workdir:
            self.workdir = self.sandbox.spec.workdir

    def path(self, path: str) -> str:
        """Absolute sandbox path of `path`, relative ones taken from `workdir`."""
        return sandbox_path(path, self.workdir)

    def shown(self, path: str) -> str:
        """`path` as an error message shows it: absolute when it resolves, else as given."""
        try:
            return self.path(path)
        except SandboxError:
            return path

    def close(self) -> None:
        if self.session is not None:
            self.session.close()
            self.session = None


class Tool(ABC):
    """One tool: its name, what the model is told it does, the JSON schema of its arguments,
    and `run`, which only ever sees arguments that passed that schema (see `run_tool`)."""

    name: ClassVar[str]
    description: ClassVar[str]
    parameters: ClassVar[dict]
    read_only: ClassVar[bool] = True  # does not change the sandbox (safe to run in parallel)

    @abstractmethod
    def run(self, ctx: ToolContext, args: dict) -> ToolResult: ...

    def schema(self) -> dict:
        """The OpenAI `tools` entry."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.parameters,
            },
        }

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


def fail(text: str, **meta: Any) -> ToolResult:
    """An error result: `text` says what was wrong and what to try instead."""
    return ToolResult(output=text, error=True, meta=meta)


def arguments(properties: dict, required: list[str]) -> dict:
    """The schema of a tool's arguments: an object with exactly these properties."""
    return {
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
    }


def text_arg(description: str) -> dict:
    """The schema of a string argument."""
    return {"type": "string", "description": description}


def truncate(text: str, limit: int) -> str:
    """Head and tail of `text` within about `limit` characters: errors are usually at the end."""
    if len(text) <= limit:
        return text
    head = limit // 2
    tail = limit - head
    omitted = len(text) - head - tail
    return f"{text[:head]}\n[... {omitted} characters omitted ...]\n{text[-tail:]}"


def numbered(lines: list[str], first: int) -> str:
    """Lines as read_file shows them: `   12\\tcode`."""
    return "\n".join(f"{n:5d}\t{line}" for n, line in enumerate(lines, first))
