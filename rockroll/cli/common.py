"""What every noun's commands share: the two consoles, and how verbs are declared."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from rich.console import Console

from rockroll.errors import UsageError

DB_HELP = "state database of the sandbox server (default $ROCKROLL_HOME/service.db)"
out = Console()
err = Console(stderr=True)
Verbs = argparse._SubParsersAction
Command = Callable[[argparse.Namespace], int]


def verbs(parser: argparse.ArgumentParser) -> Verbs:
    return parser.add_subparsers(title="verbs", metavar="<verb>")


def add(verbs: Verbs, name: str, func: Command, help: str, example: str) -> argparse.ArgumentParser:
    """A verb: its help line, what runs it, and one example its --help ends with."""
    sub = verbs.add_parser(name, help=help, description=help, example=example)
    sub.set_defaults(func=func)
    return sub


def env_pairs(pairs: list[str]) -> dict[str, str]:
    """`--env NAME=value` options as a mapping."""
    env = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise UsageError(f"--env {pair!r} must look like NAME=value")
        env[key] = value
    return env


def positive(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def policy_options(parser: argparse.ArgumentParser) -> None:
    """--allow, --deny and --via: an egress policy, for `create` and `network`."""
    parser.add_argument(
        "--allow",
        action="append",
        default=[],
        metavar="ENTRY",
        help="let connections reach this domain, *.domain, address or network (:PORT[-PORT])",
    )
    parser.add_argument("--deny", action="append", default=[], metavar="ENTRY")
    parser.add_argument("--via", help="the network namespace connections leave from (a path)")


def network_setting(
    mode: str | None, allow: list[str], deny: list[str], via: str | None
) -> str | dict:
    """What --network and --allow/--deny/--via ask for, as `Sandbox.create(network=)` takes."""
    if allow or deny or via:
        if mode is not None:
            raise UsageError(f"--network {mode} or --allow/--deny, not both")
        return {"allow": allow, "deny": deny} | ({"via": via} if via else {})
    return mode or "none"
