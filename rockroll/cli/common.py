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


def add(verbs: Verbs, name: str, func: Command, help: str) -> argparse.ArgumentParser:
    sub = verbs.add_parser(name, help=help, description=help)
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
