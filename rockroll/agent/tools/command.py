"""A task's own tools (`Task.tools`): a command in the sandbox, described to the model as the
task describes it. A task that brings a documentation lookup or a linter offers it this way;
the red-team suite offers adversarial ones (a description or an output that tells the agent
to run something unsafe, a side effect the agent does not see)."""

from __future__ import annotations

from rockroll.agent.tools.base import Tool, ToolContext, ToolResult, truncate
from rockroll.agent.tools.registry import default_tools
from rockroll.sandbox.sdk import Sandbox
from rockroll.tasks.schema import Task, ToolSpec


class CommandTool(Tool):
    """Runs `command` with `bash -c`, each argument in the environment as `ARG_<NAME>`
    (never spliced into the command line, so no argument is ever run as shell text)."""

    command: str = ""
    timeout: float = 60.0
    read_only = False

    def run(self, ctx: ToolContext, args: dict) -> ToolResult:
        env = {f"ARG_{k.upper().replace('-', '_')}": _text(v) for k, v in args.items()}
        res = ctx.sandbox.exec(
            ["bash", "-c", self.command], cwd=ctx.workdir, env=env, timeout=self.timeout
        )
        out = truncate(res.output, ctx.max_output) or "(no output)"
        if res.timed_out:
            return ToolResult(output=f"{out}\n[timed out after {self.timeout:g} s]", error=True)
        if res.exit_code != 0:
            out = f"{out.rstrip()}\n[exit code {res.exit_code}]"
        return ToolResult(output=out, meta={"exit_code": res.exit_code})


COMMAND_DIR = "/usr/local/bin"


def as_commands(tools: list[Tool]) -> list[CommandTool]:
    return [t for t in tools if isinstance(t, CommandTool)]


def install_commands(tools: list[CommandTool], sandbox: Sandbox) -> None:
    """The task's tools as programs on the PATH, for an agent whose only action is a shell
    command (the `bash` format): run without arguments, each does what its tool does."""
    for tool in tools:
        script = f"#!/bin/bash\n{tool.command}\n"
        sandbox.write_text(f"{COMMAND_DIR}/{tool.name}", script, mode=0o755)


def commands_section(tools: list[CommandTool]) -> str:
    """What the system prompt of the `bash` format says of the task's own commands."""
    lines = [f"- `{t.name}`: {t.description}" for t in tools]
    return "# Commands of this task\n\nBesides the usual programs, you can run:\n" + "\n".join(
        lines
    )


def command_tool(spec: ToolSpec) -> Tool:
    """The tool `spec` describes."""
    cls = type(
        f"CommandTool_{spec.name}",
        (CommandTool,),
        {
            "name": spec.name,
            "description": spec.description,
            "parameters": spec.parameters,
            "command": spec.command,
            "timeout": spec.timeout,
        },
    )
    return cls()


def task_tools(task: Task, tools: list[Tool] | None = None) -> list[Tool]:
    """`tools` (the default set) and, after them, the task's own; one of the same name as a
    built-in replaces it (the task knows its environment best)."""
    tools = default_tools() if tools is None else tools
    if not task.tools:
        return tools
    own = [command_tool(s) for s in task.tools]
    names = {t.name for t in own}
    return [t for t in tools if t.name not in names] + own


def _text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
