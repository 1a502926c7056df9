"""`rockroll token`: create, list and revoke the tokens of the sandbox server's database."""

from __future__ import annotations

import argparse
import time

from rich.table import Table

from rockroll.cli.common import DB_HELP, Verbs, add, err, out, verbs
from rockroll.errors import UsageError


def register(nouns: Verbs) -> None:
    parser = nouns.add_parser("token", help="tokens of the sandbox server")
    commands = verbs(parser)
    create = add(
        commands,
        "create",
        create_token,
        "create a token; its secret is shown once",
        example="rockroll token create ci-runner --max-sandboxes 8 --max-memory 16g",
    )
    create.add_argument("name", help="who or what uses it")
    create.add_argument("--admin", action="store_true", help="may see and touch every sandbox")
    create.add_argument("--max-sandboxes", type=int, help="live sandboxes at most")
    create.add_argument("--max-memory", help="total memory limit of its sandboxes, like 64g")
    create.add_argument("--max-cpus", type=float, help="total CPUs of its sandboxes")
    create.add_argument("--max-pids", type=int, help="total process limit of its sandboxes")
    create.add_argument("--max-execs", type=int, help="commands and transfers at once")
    create.add_argument("--max-snapshots", type=int, help="snapshots at most")
    create.add_argument("--max-disk", help="total disk of its sandboxes and snapshots, like 500g")
    create.add_argument(
        "--allow-network", action="store_true", help="may ask for network 'full' (the host's)"
    )
    create.add_argument(
        "--unlimited", action="store_true", help="no default limits, only the ones given"
    )
    create.add_argument("--db", help=DB_HELP)
    ls = add(
        commands,
        "ls",
        list_tokens,
        "list tokens (never their secrets)",
        example="rockroll token ls",
    )
    ls.add_argument("--db", help=DB_HELP)
    revoke = add(
        commands,
        "revoke",
        revoke_token,
        "revoke a token by id",
        example="rockroll token revoke TOKEN_ID",
    )
    revoke.add_argument("id", help="token id (tok-...)")
    revoke.add_argument("--db", help=DB_HELP)


def create_token(args: argparse.Namespace) -> int:
    from rockroll.sandbox.spec import parse_size
    from rockroll.service.store import Store

    for flag in ("max_sandboxes", "max_cpus", "max_pids", "max_snapshots"):
        if getattr(args, flag) is not None and getattr(args, flag) < 0:
            raise UsageError(f"--{flag.replace('_', '-')} must be 0 or more")
    if args.max_execs is not None and args.max_execs < 1:
        raise UsageError("--max-execs must be 1 or more")
    memory = parse_size(args.max_memory, "--max-memory") if args.max_memory else None
    disk = parse_size(args.max_disk, "--max-disk") if args.max_disk else None
    token, secret = Store(args.db).create_token(
        args.name,
        admin=args.admin,
        max_sandboxes=args.max_sandboxes,
        max_memory=memory,
        max_cpus=args.max_cpus,
        max_pids=args.max_pids,
        max_execs=args.max_execs,
        max_snapshots=args.max_snapshots,
        max_disk=disk,
        allow_network=args.allow_network,
        unlimited=args.unlimited,
    )
    err.print(f"token {token.id} ({token.name}{', admin' if token.admin else ''}); the secret:")
    print(secret)
    return 0


def list_tokens(args: argparse.Namespace) -> int:
    from rockroll.service.store import Store

    def gib(value: float | None) -> str:
        return "-" if value is None else f"{value / (1 << 30):.0f}G"

    def num(value: float | None) -> str:
        return "-" if value is None else f"{value:g}"

    table = Table("id", "name", "admin", "sandboxes", "memory", "cpus", "pids", "execs")
    for column in ("snapshots", "disk", "network", "created", "revoked"):
        table.add_column(column)
    for t in Store(args.db).tokens():
        table.add_row(
            t.id,
            t.name,
            "yes" if t.admin else "",
            num(t.limit("max_sandboxes")),
            gib(t.limit("max_memory")),
            num(t.limit("max_cpus")),
            num(t.limit("max_pids")),
            num(t.limit("max_execs")),
            num(t.limit("max_snapshots")),
            gib(t.limit("max_disk")),
            "full" if t.allow_network or t.unlimited else "none",
            time.strftime("%Y-%m-%d %H:%M", time.localtime(t.created)),
            time.strftime("%Y-%m-%d %H:%M", time.localtime(t.revoked)) if t.revoked else "",
        )
    out.print(table)
    out.print("limits as they apply: - means none (a token made with --unlimited)")
    return 0


def revoke_token(args: argparse.Namespace) -> int:
    from rockroll.service.store import Store

    if not Store(args.db).revoke_token(args.id):
        raise UsageError(f"no live token {args.id!r}; `rockroll token ls` lists them")
    out.print(f"revoked {args.id}")
    return 0
