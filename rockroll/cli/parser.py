"""The command line's parser: argparse's, with mistakes answered in one line that names the
command, the problem and the fix (a did-you-mean for nouns, verbs, options and choices; a hint
when a command's own options came without `--`), and help that ends with an example.

argparse prints the top-level usage for anything it cannot place and knows no suggestions
(before Python 3.14); here every parser is a `Parser`, which remembers its options and its
subcommands, so a mistake is explained by the command it was made in.
"""

from __future__ import annotations

import argparse
import difflib
import re
import shlex
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

USAGE_ERROR = 2  # argparse's exit status for a command line it cannot parse
PARSER_KEY = "rockroll_parser"  # the namespace attribute naming the innermost parser used


class CommandLineError(Exception):
    """A command line that names no command, or holds what its command does not take."""


class Parser(argparse.ArgumentParser):
    """An `ArgumentParser` whose errors are one line with a suggestion (`CommandLineError`)."""

    def __init__(self, *args: Any, example: str | None = None, **kwargs: Any) -> None:
        if example:
            kwargs.setdefault("epilog", f"example:\n  {example}")
            kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        self.flags: list[str] = []  # set first: argparse adds --help while it starts
        self.commands: dict[str, Parser] = {}
        self.takes_command = False  # a positional `command` the user writes after `--`
        super().__init__(*args, **kwargs)

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:
        action = super().add_argument(*args, **kwargs)
        self.flags.extend(action.option_strings)
        if not action.option_strings and action.dest == "command":
            self.takes_command = True
        return action

    def add_subparsers(self, **kwargs: Any) -> Any:
        kwargs.setdefault("parser_class", Parser)
        subcommands = super().add_subparsers(**kwargs)
        self.commands = subcommands.choices
        return subcommands

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        parsed, extras = super().parse_known_args(args, namespace)
        if not hasattr(parsed, PARSER_KEY):  # the innermost parser sets it first
            setattr(parsed, PARSER_KEY, self)
        return parsed, extras

    def error(self, message: str) -> NoReturn:
        raise CommandLineError(f"{self.prog}: {message}; {_suggestion(message) or self.see_help()}")

    def see_help(self) -> str:
        return f"see `{self.prog} --help`"


def misspelt_command(parser: Parser, words: Sequence[str]) -> str | None:
    """A one-line error when `words` name a noun or verb that does not exist, else None."""
    here, i = parser, 0
    while here.commands:
        while i < len(words) and words[i].startswith("-"):
            i += 1  # options before the noun (--help, --version) take no values
        if i >= len(words):
            return None
        word = words[i]
        if word not in here.commands:
            close = difflib.get_close_matches(word, list(here.commands), n=1, cutoff=0.6)
            hint = (
                f"did you mean `{here.prog} {close[0]}`?"
                if close
                else f"one of: {', '.join(here.commands)}"
            )
            kind = "noun" if here is parser else "verb"
            return f"{here.prog}: no {kind} {word!r}; {hint}"
        here, i = here.commands[word], i + 1
    return None


def leftover_words(parsed: argparse.Namespace, extras: list[str], words: Sequence[str]) -> str:
    """The one-line error for what no parser took: options it does not know (with the nearest
    one it does), a command's own options written without `--`, or words too many."""
    parser: Parser = getattr(parsed, PARSER_KEY)
    command = list(getattr(parsed, "command", None) or [])
    unknown = [w for w in extras if w.startswith("-") and w != "-"]
    if parser.takes_command and (command or unknown):
        start = _start_of(command[0] if command else extras[0], words)
        fixed = [*words[:start], "--", *words[start:]]
        return (
            f"{parser.prog}: {shlex.join(extras)} is read as an option of {parser.prog}, not of "
            f"the command; put the command after `--`: rockroll {shlex.join(fixed)}"
        )
    if unknown:
        flag = unknown[0].split("=", 1)[0]
        close = difflib.get_close_matches(flag, parser.flags, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]}?" if close else parser.see_help()
        return f"{parser.prog}: no option {flag}; {hint}"
    return f"{parser.prog}: unexpected argument {shlex.join(extras)}; {parser.see_help()}"


def _start_of(word: str, words: Sequence[str]) -> int:
    """Where the command begins in `words` (its first word, searched from the end)."""
    for i in range(len(words) - 1, -1, -1):
        if words[i] == word:
            return i
    return len(words)


_CHOICE = re.compile(r"invalid choice: '([^']*)' \(choose from (.*)\)$")


def _suggestion(message: str) -> str | None:
    """The nearest choice, when argparse's message is about a value not among the choices."""
    m = _CHOICE.search(message)
    if not m:
        return None
    choices = [c.strip().strip("'") for c in m.group(2).split(",")]
    close = difflib.get_close_matches(m.group(1), choices, n=1, cutoff=0.6)
    return f"did you mean {close[0]!r}?" if close else None


def fail(message: str) -> int:
    """Print a command-line mistake as one line on stderr; argparse's exit status for it."""
    print(f"error: {message}", file=sys.stderr)
    return USAGE_ERROR
