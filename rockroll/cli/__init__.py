"""`rockroll <noun> <verb>`: the single command-line entry point."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version

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
from rockroll.cli.parser import (
    PARSER_KEY,
    CommandLineError,
    Parser,
    fail,
    leftover_words,
    misspelt_command,
)
from rockroll.errors import RockrollError

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; its exit code. A `RockrollError` (a mistake the user can fix, or a
    failure the message explains) is printed as one line `error: MESSAGE`, exit code 1; a
    command line that names no command or holds what its command does not take exits 2 with
    one line naming the command, the problem and the fix."""
    parser = build_parser()
    words = list(sys.argv[1:] if argv is None else argv)
    rest: list[str] | None = None
    if "--" in words:
        cut = words.index("--")
        words, rest = words[:cut], words[cut + 1 :]
    try:
        problem = misspelt_command(parser, words)
        if problem:
            return fail(problem)
        args, extras = parser.parse_known_args(words)
        if extras:
            return fail(leftover_words(args, extras, words))
        if rest is not None and not hasattr(args, "command"):
            used = getattr(args, PARSER_KEY)
            return fail(
                f"{used.prog}: takes no command after `--`; "
                "'--' introduces a command, as in `rockroll sandbox exec ID -- CMD`"
            )
    except CommandLineError as exc:
        return fail(str(exc))
    if rest is not None:
        args.command = [*args.command, *rest]
    if not hasattr(args, "func"):
        getattr(args, PARSER_KEY, parser).print_help()
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


def build_parser() -> Parser:
    parser = Parser(
        prog="rockroll", description=__doc__, example="rockroll sandbox create --memory 1g"
    )
    parser.add_argument("--version", action="version", version=f"rockroll {_version()}")
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


def _version() -> str:
    try:
        return version("rockroll")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "(not installed)"
