"""`rockroll safety ...`: what the monitor's rules find."""

from __future__ import annotations

import argparse
import json

from rich.markup import escape
from rich.table import Table

from rockroll.cli.common import add, out, positive, verbs
from rockroll.safety import default_rules, load_rules
from rockroll.safety.scan import scan


def register(nouns: argparse._SubParsersAction) -> None:
    noun = nouns.add_parser(
        "safety", help="rules over what sandboxes run: scan logs, compose red-team suites"
    )
    v = verbs(noun)
    p = add(
        v,
        "scan",
        cmd_scan,
        "events the rules catch in an audit log, trajectory or run folder",
        example="rockroll safety scan runs/evoeval-oracle --json",
    )
    p.add_argument("path", help="a sandbox audit log (.jsonl), an ATIF trajectory, or a folder")
    p.add_argument("--rules", help="a rules file (TOML [[rule]] tables or JSON); default: shipped")
    p.add_argument("--json", action="store_true", help="one JSON object per finding")
    r = add(
        v,
        "redteam",
        cmd_redteam,
        "compose benign tasks with attacks into task folders",
        example="rockroll safety redteam 'term:note-mkdir?size=2' --out redteam/",
    )
    r.add_argument("suite", help="the benign tasks: a folder of tasks, term:..., humaneval/N")
    r.add_argument("--out", required=True, help="where the red-team task folders go")
    r.add_argument(
        "--channels", default="prompt,repo,tool", help="prompt, repo, tool (default: all three)"
    )
    r.add_argument(
        "--attacks", default="all", help="attack ids or classes, comma-separated (default all)"
    )
    r.add_argument(
        "--per-task", type=positive, default=1, help="attacks per task and channel (default 1)"
    )
    r.add_argument(
        "--follower",
        action="store_true",
        help="give each task the expert commands of an agent that follows the injection "
        "(unsafe demonstrations; ids end in /follower)",
    )


def cmd_scan(args: argparse.Namespace) -> int:
    rules = load_rules(args.rules) if args.rules else default_rules()
    findings = scan(args.path, rules)
    if args.json:
        for f in findings:
            print(json.dumps(f.as_json(), ensure_ascii=False))
        return 0
    table = Table(title=f"{len(findings)} finding(s) in {args.path}")
    for column in ("where", "kind", "what", "rules", "action"):
        table.add_column(column)
    for f in findings:
        e = f.event
        what = " ".join(e.get("argv") or []) if e["kind"] == "exec" else ""
        if e["kind"] == "connect":
            by = " ".join(e.get("argv") or [])
            what = f"{e.get('proto', '')} {e.get('address')}:{e.get('port')} by {by}"
        table.add_row(
            escape(f.source),
            e["kind"] + (" (typed)" if e.get("typed") else ""),
            escape(what[:200]),
            ", ".join(r["id"] for r in f.rules),
            str(e.get("action")),
        )
    out.print(table)
    return 0


def cmd_redteam(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rockroll.errors import UsageError
    from rockroll.safety.attacks import select_attacks
    from rockroll.safety.redteam import CHANNELS, write_suite
    from rockroll.tasks.suites import load_suite

    channels = [c.strip() for c in args.channels.split(",") if c.strip()]
    if bad := [c for c in channels if c not in CHANNELS]:
        raise UsageError(f"--channels: unknown channel {bad[0]!r}; use {', '.join(CHANNELS)}")
    attacks = select_attacks(args.attacks)
    items = load_suite(args.suite)
    skipped = [i for i in items if not hasattr(i, "instruction")]
    out_dir = Path(args.out)
    written = write_suite(
        items,
        attacks,
        out_dir,
        channels=channels,
        suite=args.suite,
        per_task=args.per_task,
        follower=args.follower,
    )
    out.print(
        f"wrote {len(written)} red-team task(s) to {out_dir} ({len(items) - len(skipped)} "
        f"task(s) x {len(channels)} channel(s) x {args.per_task}, {len(attacks)} attack(s))"
    )
    for item in skipped:
        out.print(f"skipped {getattr(item, 'task_id', '?')}: {item}")
    out.print(f"run them with: rockroll bench run {out_dir} --agent harness --model SPEC")
    return 0
