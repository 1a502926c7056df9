"""`rockroll <noun> <verb>`: the single command-line entry point."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from rich.markup import escape

from rockroll.cli import (
    agent,
    bench,
    data,
    demo,
    image,
    model,
    safety,
    sandbox,
    serve,
    token,
    train,
)
from rockroll.cli.common import err
from rockroll.errors import RockrollError

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; its exit code. A `RockrollError` (a mistake the user can fix, or a
    failure the message explains) is printed as one line `error: MESSAGE`, exit code 1; a
    command line argparse cannot parse exits 2 with the usage."""
    parser = build_parser()
    words = list(sys.argv[1:] if argv is None else argv)
    rest: list[str] | None = None
    if "--" in words:
        cut = words.index("--")
        words, rest = words[:cut], words[cut + 1 :]
    args = parser.parse_args(words)
    if rest is not None:
        if not hasattr(args, "command"):
            parser.error("'--' introduces a command, as in `rockroll sandbox exec ID -- CMD`")
        args.command = [*args.command, *rest]
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except RockrollError as exc:
        err.print(f"[bold red]error:[/] {escape(one_line(exc))}", highlight=False, soft_wrap=True)
        return 1
    except KeyboardInterrupt:
        err.print("interrupted")
        return 130


def one_line(exc: BaseException) -> str:
    """The message of `exc` on one line (a lower layer's message may hold newlines)."""
    return " ".join(line.strip() for line in str(exc).splitlines() if line.strip())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rockroll", description=__doc__)
    nouns = parser.add_subparsers(title="commands", metavar="<noun> <verb>")
    image.register(nouns)
    sandbox.register(nouns)
    bench.register(nouns)
    agent.register(nouns)
    model.register(nouns)
    token.register(nouns)
    serve.register(nouns)
    train.register(nouns)
    data.register(nouns)
    safety.register(nouns)
    demo.register(nouns)
    return parser
