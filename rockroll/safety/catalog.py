"""The shipped rule set (rules.toml) and rule files of one's own."""

from __future__ import annotations

import functools
import json
import tomllib
from pathlib import Path
from typing import Any

from rockroll.errors import InvalidArgument
from rockroll.sandbox.watch import RuleError, Rules

DEFAULT_RULES = Path(__file__).with_name("rules.toml")


@functools.cache
def _default() -> tuple[dict[str, Any], ...]:
    return tuple(load_rules(DEFAULT_RULES))


def default_rules() -> list[dict[str, Any]]:
    """The shipped rules, as data for `Sandbox.create(rules=...)` (a fresh copy each call)."""
    return json.loads(json.dumps(_default()))


def observing(rules: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The same rules flagging what they would refuse or kill: to watch without changing
    what an agent can do (a benchmark's scores stay comparable)."""
    strong = ("refuse", "kill", "end")
    return [r | {"action": "flag"} if r.get("action") in strong else dict(r) for r in rules]


def load_rules(path: str | Path) -> list[dict[str, Any]]:
    """Rules from a TOML file of [[rule]] tables or a JSON list; checked, errors name the file."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise InvalidArgument(f"{path}: cannot read the rules file: {e.strerror}") from None
    try:
        json_file = path.suffix == ".json"
        data = json.loads(text) if json_file else tomllib.loads(text).get("rule", [])
    except (ValueError, tomllib.TOMLDecodeError) as e:
        raise InvalidArgument(f"{path}: not a rules file: {e}") from None
    if not isinstance(data, list):
        raise InvalidArgument(f"{path}: rules are a list ([[rule]] tables in TOML)")
    try:
        Rules(data)
    except RuleError as e:
        raise InvalidArgument(f"{path}: {e}") from None
    return data
