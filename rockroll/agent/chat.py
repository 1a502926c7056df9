"""`rockroll agent chat`: the harness as an interactive assistant.

Each user message continues the same loop state and sandbox; the model works (tool calls,
shown as they happen) until it answers in plain text, submits or hits a limit, then the user
speaks again. In `ask` mode every command outside the allow rules needs a yes. The session is
saved after every step, so `--resume` continues a conversation.
"""

from __future__ import annotations

import sys
from typing import TextIO

from rich.console import Console
from rich.markup import escape

from rockroll.agent.launch import Launch
from rockroll.agent.tools import CommandRules

HELP = "Type a message. /exit (or Ctrl-D) leaves; the session can be resumed with --resume."
_PREVIEW = 1200


def chat(
    run: Launch,
    rules: CommandRules,
    out: Console,
    err: Console,
    stdin: TextIO | None = None,
) -> int:
    """Talk until /exit or end of input; returns the exit code (0, or 4/5 on failures)."""
    stdin = stdin or sys.stdin
    rules.ask = lambda command: _confirm(command, err, stdin)
    run.loop.config.interactive = True
    err.print(f"session {run.record.id[:12]} in sandbox {run.sandbox.id} ({rules.mode} mode)")
    err.print(HELP)
    for note in run.notes:
        err.print(note, highlight=False)
    per_message = run.loop.config.max_turns  # in a chat the turn limit is per message
    code = 0
    try:
        while (text := _read(stdin, err)) is not None:
            if not text:
                continue
            run.state.add_user(text)
            run.loop.config.max_turns = run.state.turns + per_message
            result = run.loop.run(
                None,
                run.sandbox,
                state=run.state,
                trajectory_path=run.trajectory_path(),
                on_event=lambda e: _show(e, out),
                on_step=run.save,
            )
            if result.termination in ("model_error", "sandbox_error"):
                err.print(f"[red]{escape(result.error or result.termination)}[/]")
                code = 4 if result.termination == "model_error" else 5
            elif result.termination != "answered":
                err.print(f"({result.termination} after {result.turns} turns)")
    finally:
        run.save(run.state)
        run.sandbox.close()
        err.print(f"saved; continue with: rockroll agent chat --resume {run.record.id[:12]}")
    return code


def _read(stdin: TextIO, err: Console) -> str | None:
    err.print("[bold]you>[/] ", end="")
    line = stdin.readline()
    if not line or line.strip() in ("/exit", "/quit"):
        return None
    return line.strip()


def _confirm(command: str, err: Console, stdin: TextIO) -> bool:
    err.print(f"run [bold]{escape(command)}[/]? [y/N] ", end="")
    return stdin.readline().strip().lower() in ("y", "yes")


def _show(event: dict, out: Console) -> None:
    if event["type"] != "step":
        return
    if event.get("message"):
        out.print(f"[bold cyan]agent>[/] {escape(event['message'])}")
    for name, result in zip(event["calls"], event.get("results", []), strict=False):
        body = result if len(result) <= _PREVIEW else result[:_PREVIEW] + " [...]"
        out.print(f"[dim]({name}) {escape(body)}[/]")
