"""`rockroll safety ...`: what the monitor's rules find."""

from __future__ import annotations

import argparse
import json

from rich.markup import escape
from rich.table import Table

from rockroll.cli.common import add, out, verbs
from rockroll.safety import default_rules, load_rules
from rockroll.safety.scan import scan


def register(nouns: argparse._SubParsersAction) -> None:
    noun = nouns.add_parser("safety", help="rules over what sandboxes run: scan logs")
    v = verbs(noun)
    p = add(v, "scan", cmd_scan, "events the rules catch in an audit log, trajectory or run folder")
    p.add_argument("path", help="a sandbox audit log (.jsonl), an ATIF trajectory, or a folder")
    p.add_argument("--rules", help="a rules file (TOML [[rule]] tables or JSON); default: shipped")
    p.add_argument("--json", action="store_true", help="one JSON object per finding")


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
