"""`rockroll agent`: run the agent harness headless on an instruction or a task, talk to it,
and list the saved sessions."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

from rich.table import Table

from rockroll.cli.common import Verbs, add, err, out, verbs
from rockroll.errors import UsageError

if TYPE_CHECKING:
    from rockroll.agent.launch import Launch

# Exit codes of `agent run`: 0 submitted, 3 a limit ended the run, 4 the model failed,
# 5 the sandbox failed, 1 bad input, 2 usage, 130 interrupted (the session can be resumed).
EXIT = {"submitted": 0, "answered": 0, "model_error": 4, "sandbox_error": 5}


def register(nouns: Verbs) -> None:
    parser = nouns.add_parser("agent", help="run the agent harness headless")
    commands = verbs(parser)
    run = add(
        commands,
        "run",
        run_agent,
        "run the agent on an instruction or a task, headless",
        example='rockroll agent run "count the lines of /etc/passwd into /root/n.txt" '
        "--model openai:gpt-4o-mini",
    )
    run.add_argument("instruction", nargs="?", help="what to do (default: the task's)")
    run.add_argument("--task", help="a task folder: its image, files and verifier")
    run.add_argument("--resume", metavar="SESSION", help="continue a saved session (id prefix)")
    _options(run)
    run.add_argument("--trajectory", help="also write the ATIF trajectory here")
    run.add_argument("--json", action="store_true", help="JSONL events on stdout, then a record")
    run.add_argument("--keep", action="store_true", help="keep the sandbox after the run")
    talk = add(
        commands,
        "chat",
        chat,
        "talk to the agent; it asks before running commands",
        example="rockroll agent chat --model openai:smollm2@http://127.0.0.1:8000/v1",
    )
    talk.add_argument("--resume", metavar="SESSION", help="continue a saved session (id prefix)")
    talk.add_argument("--yolo", action="store_true", help="run commands without asking")
    talk.add_argument("--allow", action="append", default=[], help="command pattern to allow")
    _options(talk)
    listing = add(
        commands,
        "sessions",
        sessions,
        "list saved sessions, newest first",
        example="rockroll agent sessions",
    )
    listing.add_argument("-n", type=int, default=20, help="how many (default 20)")


def _options(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("--model", help="scripted:PATH, openai:MODEL[@URL], local:smollm2 ...")
    cmd.add_argument("--sandbox", default="base", help="image to run in (without --task)")
    cmd.add_argument("--workdir", default="/root", help="working directory in the sandbox")
    cmd.add_argument(
        "--max-turns", type=int, help="turn limit (default 50; a resumed run gets as many more)"
    )
    cmd.add_argument("--max-tokens", type=int, help="tokens per model reply (default 1024)")
    cmd.add_argument("--format", choices=["auto", "native", "tool_call", "bash"])
    cmd.add_argument("--retries", type=int, help="retries of a failing model endpoint (5)")


def _config(args: argparse.Namespace, **fixed: object) -> dict:
    """Only the limits given on the command line, so a resumed run keeps its own."""
    given = {
        "max_turns": args.max_turns,
        "max_tokens_per_turn": args.max_tokens,
        "action_format": args.format,
    }
    return {k: v for k, v in given.items() if v is not None} | fixed


def _launch(args: argparse.Namespace, kind: str, rules: object = None) -> Launch:
    from rockroll.agent import launch
    from rockroll.agent.loop import build_agent_config

    options = _config(args, **({"interactive": True} if kind == "chat" else {}))
    if args.resume:
        return launch.resume(
            args.resume,
            model_spec=args.model,
            rules=rules,  # type: ignore[arg-type]
            retries=args.retries,
            log=err.log,
            **options,
        )
    if not args.model:
        raise UsageError("--model is required for a new session, e.g. --model local:smollm2")
    return launch.start(
        instruction=getattr(args, "instruction", None),
        model_spec=args.model,
        config=build_agent_config(options, where="the command line"),
        task_dir=getattr(args, "task", None),
        image=args.sandbox,
        workdir=args.workdir,
        kind=kind,
        rules=rules,  # type: ignore[arg-type]
        retries=args.retries,
        log=err.log,
    )


def run_agent(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rockroll.tasks.verify import verify

    if args.resume and (args.instruction or args.task):
        raise UsageError("--resume continues a saved session: give no instruction or --task")
    run = _launch(args, "run")
    for note in run.notes:
        err.print(note, highlight=False)
    extra = Path(args.trajectory) if args.trajectory else None

    def event(e: dict) -> None:
        if args.json:
            print(json.dumps(e), flush=True)
        elif e["type"] == "step":
            err.print(f"turn {e['turn']}: {', '.join(e['calls']) or 'format error'}")

    def step(state: object) -> None:
        run.save(state)  # type: ignore[arg-type]
        if extra is not None:
            run.state.trajectory.save(extra)

    err.print(f"session {run.record.id} (sandbox {run.sandbox.id})", highlight=False)
    try:
        result = run.loop.run(
            None,
            run.sandbox,
            state=run.state,
            trajectory_path=run.trajectory_path(),
            on_event=event,
            on_step=step,
        )
    except KeyboardInterrupt:
        err.print(f"stopped; continue with: rockroll agent run --resume {run.record.id[:12]}")
        raise
    record = result.record() | {"trajectory": str(run.trajectory_path())}
    if run.task is not None:
        verdict = verify(run.task, run.sandbox)
        record |= {"reward": verdict.reward, "passed": verdict.passed}
    if args.keep:
        record["sandbox"] = run.sandbox.id
    else:
        run.sandbox.close()
    if args.json:
        print(json.dumps({"type": "result", **record}), flush=True)
    else:
        err.print(f"ended: {result.termination} after {result.turns} turns", highlight=False)
        if result.error:
            err.print(f"[red]{result.error}[/]", highlight=False)
    return EXIT.get(result.termination, 3)


def chat(args: argparse.Namespace) -> int:
    from rockroll.agent.chat import chat as talk
    from rockroll.agent.tools import CommandRules

    rules = CommandRules(mode="yolo" if args.yolo else "ask", allow=args.allow)
    run = _launch(args, "chat", rules)
    return talk(run, rules, out, err)


def sessions(args: argparse.Namespace) -> int:
    from rockroll.agent.sessions import list_records

    table = Table("session", "kind", "created", "model", "turns", "ended", "instruction")
    for r in list_records()[: args.n]:
        table.add_row(
            r.id[:12],
            r.kind,
            r.created[:19],
            r.model,
            str(r.state.turns),
            r.state.termination or "-",
            (r.instruction or "")[:40],
        )
    out.print(table)
    return 0
