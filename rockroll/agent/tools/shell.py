"""`bash`: commands in one persistent shell session per episode, checked by the command rules."""

from __future__ import annotations

from rockroll.agent.tools.base import (
    Tool,
    ToolContext,
    ToolResult,
    arguments,
    fail,
    text_arg,
    truncate,
)
from rockroll.errors import SandboxClosed


class Bash(Tool):
    name = "bash"
    description = (
        "Run a bash command in a persistent shell: the working directory, exported variables "
        "and background jobs carry over to the next call. Output is stdout then stderr; long "
        "output keeps its head and tail. Interactive programs (editors, pagers, prompts) hang "
        "until the timeout: pass flags that make them non-interactive."
    )
    parameters = arguments(
        {
            "command": text_arg("the shell command to run"),
            "timeout": {
                "type": "number",
                "exclusiveMinimum": 0,
                "description": "seconds before the command is killed (default 120)",
            },
        },
        ["command"],
    )
    read_only = False

    def run(self, ctx: ToolContext, args: dict) -> ToolResult:
        command = args["command"]
        refusal = ctx.rules.check(command)
        if refusal:
            return fail(f"{refusal}. The command was not run.", refused=True)
        timeout = float(args.get("timeout", ctx.command_timeout))
        note = ""
        if ctx.session is None:
            ctx.session = ctx.sandbox.session(cwd=ctx.workdir)
        try:
            res = ctx.session.run(command, timeout=timeout)
        except SandboxClosed:
            # The shell ended (`exit`, or killed at a timeout); the command never started.
            ctx.session.close()
            ctx.session = ctx.sandbox.session(cwd=ctx.workdir)
            note = (
                f"[the previous shell had exited; started a new one in {ctx.workdir} "
                "(directory, variables and background jobs were reset)]\n"
            )
            res = ctx.session.run(command, timeout=timeout)
        out = note + truncate(res.stdout + res.stderr, ctx.max_output)
        meta = {"exit_code": res.exit_code, "duration": res.duration, "timed_out": res.timed_out}
        if res.timed_out:
            out = _join(out, f"[timed out after {timeout:g} s; the command was killed]")
            return ToolResult(output=out, error=True, meta=meta)
        if res.exit_code != 0:
            out = _join(out, f"[exit code {res.exit_code}]")
        # A failing command is information for the model, not a harness error.
        return ToolResult(output=out or "(no output)", meta=meta)


def _join(text: str, note: str) -> str:
    if not text:
        return note
    return f"{text}{note}" if text.endswith("\n") else f"{text}\n{note}"
