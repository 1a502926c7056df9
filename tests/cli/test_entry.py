"""The CLI's entry points and its command tree: `rockroll` (the console script in
pyproject.toml), `python -m rockroll` and `python -m rockroll.cli` are the same `main`."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from importlib import import_module
from pathlib import Path

import pytest

from rockroll.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[2]
NOUNS = {
    "image": ["build", "ls", "rm"],
    "sandbox": ["create", "exec", "shell", "ls", "rm", "gc", "snapshot", "network"],
    "bench": ["run", "report"],
    "agent": ["run", "chat", "sessions"],
    "model": ["serve"],
    "token": ["create", "ls", "revoke"],
    "serve": [],
    "train": [],
    "data": ["synth", "trajectories", "report"],
    "safety": ["scan", "redteam"],
    "demo": [],
}


def _choices(parser: object) -> dict[str, object]:
    for action in parser._actions:  # type: ignore[attr-defined]
        if action.choices and isinstance(action.choices, dict):
            return dict(action.choices)
    return {}


def test_the_console_script_is_main() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    module, _, name = scripts["rockroll"].partition(":")
    assert getattr(import_module(module), name) is main


def test_every_noun_and_verb_is_there_in_order() -> None:
    nouns = _choices(build_parser())
    assert list(nouns) == list(NOUNS)
    for noun, verbs in NOUNS.items():
        assert list(_choices(nouns[noun])) == verbs, noun
        for verb in verbs:
            assert callable(_choices(nouns[noun])[verb].get_default("func")), (noun, verb)
        if not verbs:
            assert callable(nouns[noun].get_default("func")), noun  # type: ignore[attr-defined]


@pytest.mark.parametrize("module", ["rockroll", "rockroll.cli"])
def test_python_dash_m_runs_the_cli(module: str) -> None:
    res = subprocess.run(
        [sys.executable, "-m", module, "token", "--help"], capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("usage: rockroll token [-h] <verb> ...")
    for verb in NOUNS["token"]:
        assert verb in res.stdout


def test_no_verb_prints_the_help_as_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "<noun> <verb>" in capsys.readouterr().out
