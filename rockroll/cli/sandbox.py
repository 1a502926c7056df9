"""`rockroll sandbox`: create sandboxes and use them (exec, shell, snapshot), list and remove
them, and collect what crashed processes left behind."""

from __future__ import annotations

import argparse
import json
import sys
import time

from rich.table import Table

from rockroll.cli.common import (
    Verbs,
    add,
    env_pairs,
    err,
    network_setting,
    out,
    policy_options,
    verbs,
)
from rockroll.errors import UsageError


def register(nouns: Verbs) -> None:
    parser = nouns.add_parser("sandbox", help="create and use sandboxes")
    commands = verbs(parser)
    _create_options(
        add(
            commands,
            "create",
            create,
            "start a sandbox that outlives this command",
            example="rockroll sandbox create --memory 1g --network registries",
        )
    )
    ex = add(
        commands,
        "exec",
        execute,
        "run a command in a sandbox; exits with its exit code",
        example="rockroll sandbox exec ID -- ls -la /app",
    )
    ex.add_argument("id")
    ex.add_argument("--timeout", type=float, default=600.0)
    ex.add_argument("--cwd")
    ex.add_argument("--env", action="append", default=[], metavar="K=V")
    ex.add_argument("--user", help="run as this user of the sandbox (name[:group])")
    ex.add_argument("command", nargs="*", help="the command, after --")
    shell_cmd = add(
        commands,
        "shell",
        shell,
        "a persistent bash in a sandbox, line by line",
        example="rockroll sandbox shell ID",
    )
    shell_cmd.add_argument("id")
    ls = add(commands, "ls", list_sandboxes, "list sandboxes", example="rockroll sandbox ls")
    ls.add_argument("--json", action="store_true")
    rm = add(commands, "rm", remove, "stop and remove sandboxes", example="rockroll sandbox rm ID")
    rm.add_argument("ids", nargs="*")
    rm.add_argument("--all", action="store_true")
    add(
        commands,
        "gc",
        collect,
        "remove what crashed or killed processes left behind",
        example="rockroll sandbox gc",
    )
    snap = add(
        commands,
        "snapshot",
        snapshot,
        "freeze a sandbox's files into a snapshot",
        example="rockroll sandbox snapshot ID",
    )
    snap.add_argument("id")
    net = add(
        commands,
        "network",
        network,
        "change a running sandbox's egress policy",
        example="rockroll sandbox network ID --allow pypi.org --allow files.pythonhosted.org",
    )
    net.add_argument("id")
    net.add_argument("mode", nargs="?", choices=["none", "registries", "full"])
    policy_options(net)


def _create_options(create: argparse.ArgumentParser) -> None:
    create.add_argument("--image", default="base", help="image name or snapshot id")
    create.add_argument("--memory", default="2g", help="memory limit, e.g. 512m (default 2g)")
    create.add_argument("--cpus", type=float, default=1.0, help="CPU quota in cores")
    create.add_argument("--pids", type=int, default=1024, help="process limit")
    create.add_argument(
        "--disk", default="10g", help="what it may write, e.g. 20g; 'none': no limit"
    )
    create.add_argument("--inodes", type=int, help="files it may create (default: 1 per 16 KiB)")
    create.add_argument(
        "--network",
        choices=["none", "registries", "full"],
        help="none (default), registries, or full; --allow/--deny make a policy",
    )
    policy_options(create)
    create.add_argument("--env", action="append", default=[], metavar="K=V")
    create.add_argument("--workdir", default="/")
    create.add_argument("--user", help="who commands run as by default, like Docker's USER (root)")
    create.add_argument("--ttl", type=float, default=3600.0, help="idle seconds before removal")
    create.add_argument("--backend", choices=["bwrap", "podman"], default="bwrap")
    create.add_argument(
        "--rules",
        help="rules the monitor applies: 'default' (the shipped set) or a rules file (TOML/JSON)",
    )
    create.add_argument(
        "--no-monitor", action="store_true", help="do not record the programs and connections"
    )


def create(args: argparse.Namespace) -> int:
    from rockroll.sandbox.sdk import Sandbox, server_settings

    # Through a server (ROCKROLL_SERVER) every sandbox outlives the client: detaching is the
    # server's business, and asking for it there is refused.
    local = server_settings(None, None) is None
    sb = Sandbox.create(
        args.image,
        memory=args.memory,
        cpus=args.cpus,
        pids=args.pids,
        disk=None if args.disk.lower() == "none" else args.disk,
        inodes=args.inodes,
        network=network_setting(args.network, args.allow, args.deny, args.via),
        env=env_pairs(args.env),
        workdir=args.workdir,
        user=args.user,
        ttl=args.ttl,
        backend=args.backend,
        detached=local,
        monitor=not args.no_monitor,
        rules=_rules(args.rules),
    )
    out.print(sb.id, highlight=False)
    return 0


def network(args: argparse.Namespace) -> int:
    from rockroll.sandbox.sdk import Sandbox

    if args.mode is None and not (args.allow or args.deny):
        raise UsageError("give a mode (none, registries, full) or --allow/--deny entries")
    setting = network_setting(args.mode, args.allow, args.deny, args.via)
    Sandbox.connect(args.id).set_network(setting)
    out.print(f"{args.id}: network {json.dumps(setting)}", highlight=False)
    return 0


def _rules(choice: str | None) -> list[dict] | None:
    from rockroll.safety import default_rules, load_rules

    if choice is None:
        return None
    return default_rules() if choice == "default" else load_rules(choice)


def execute(args: argparse.Namespace) -> int:
    from rockroll.sandbox.sdk import Sandbox

    command = args.command
    if not command:
        raise UsageError("no command given: rockroll sandbox exec ID -- CMD ...")
    sb = Sandbox.connect(args.id)
    streams = {"stdout": sys.stdout.buffer, "stderr": sys.stderr.buffer}

    def show(stream: str, chunk: bytes) -> None:
        streams[stream].write(chunk)
        streams[stream].flush()

    cmd = command[0] if len(command) == 1 else command
    result = sb.exec(
        cmd,
        timeout=args.timeout,
        cwd=args.cwd,
        env=env_pairs(args.env),
        on_output=show,
        user=args.user,
    )
    if result.truncated:
        err.print("[yellow]output was longer than the cap; head and tail shown[/]")
    if result.timed_out:
        err.print(f"[red]timed out after {args.timeout:g} s; the command was killed[/]")
        return 124
    return result.exit_code


def shell(args: argparse.Namespace) -> int:
    from rockroll.sandbox.sdk import Sandbox

    sb = Sandbox.connect(args.id)
    session = sb.session()
    err.print(f"bash in sandbox {sb.id}; one command per line, Ctrl-D to leave")
    try:
        while True:
            try:
                line = input("$ ")
            except EOFError:
                return 0
            if line.strip():
                res = session.run(line)
                sys.stdout.write(res.stdout)
                sys.stderr.write(res.stderr)
                if res.exit_code:
                    err.print(f"[dim]exit {res.exit_code}[/]")
    finally:
        session.close()


def list_sandboxes(args: argparse.Namespace) -> int:
    from rockroll.sandbox.runtime import local_runtime

    records = local_runtime().list()
    if args.json:
        print(json.dumps([r.model_dump() for r in records], indent=1))
        return 0
    table = Table("id", "image", "backend", "status", "age", "memory", "network", "owner")
    for rec in records:
        age = time.time() - rec.created
        table.add_row(
            rec.id,
            rec.image,
            rec.spec.backend,
            rec.status,
            f"{age:.0f}s",
            f"{(rec.spec.memory or 0) / 2**20:.0f}M",
            rec.spec.network,
            "detached" if rec.spec.detached else str(rec.owner_pid),
        )
    out.print(table)
    return 0


def remove(args: argparse.Namespace) -> int:
    from rockroll.sandbox.runtime import local_runtime

    runtime = local_runtime()
    ids = [r.id for r in runtime.list()] if args.all else args.ids
    if not ids:
        raise UsageError("name sandboxes to remove, or pass --all")
    for sandbox_id in ids:
        runtime.get(sandbox_id)
        runtime.close(sandbox_id)
        out.print(f"removed {sandbox_id}")
    return 0


def collect(args: argparse.Namespace) -> int:
    from rockroll.sandbox.runtime import local_runtime

    report = local_runtime().gc()
    for kind, items in (
        ("sandbox", report.sandboxes),
        ("mount", report.mounts),
        ("resource", report.resources),
        ("snapshot", report.snapshots),
    ):
        for item in items:
            out.print(f"removed {kind} {item}")
    out.print(f"gc: {report.total} item(s) removed")
    return 0


def snapshot(args: argparse.Namespace) -> int:
    from rockroll.sandbox.sdk import Sandbox

    snap = Sandbox.connect(args.id).snapshot()
    out.print(snap.id, highlight=False)
    return 0
