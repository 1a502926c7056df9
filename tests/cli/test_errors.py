"""The real `rockroll` CLI on user mistakes: one line `error: ...` on stderr, no traceback, exit
code 1 (a command line argparse cannot parse: its usage, exit code 2)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rockroll.cli import main, one_line
from rockroll.errors import TaskError, UsageError


def rockroll(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    """`rockroll ARGS...` as its own process, in `home` and with its state there."""
    env = os.environ | {"ROCKROLL_HOME": str(home), "COLUMNS": "200"}
    env.pop("ROCKROLL_SERVER", None)
    return subprocess.run(
        [sys.executable, "-m", "rockroll", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=home,
    )


def one_error_line(res: subprocess.CompletedProcess[str], *words: str) -> str:
    """The single stderr line of a refused command, checked: exit 1, no traceback."""
    assert "Traceback" not in res.stderr, res.stderr
    assert res.returncode == 1, (res.returncode, res.stderr)
    lines = res.stderr.splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("error: "), lines
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


def _train_config(tmp_path: Path, tasks: str) -> Path:
    cfg = {
        "model": "local:tiny-random",
        "tasks": tasks,
        "steps": 1,
        "out": str(tmp_path / "run"),
        "tensorboard": False,
    }
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_agent_run_on_a_missing_task_folder(tmp_path: Path) -> None:
    replies = tmp_path / "replies.json"
    replies.write_text("[]")
    missing = tmp_path / "no-such-task"
    res = rockroll(
        "agent", "run", "--task", str(missing), "--model", f"scripted:{replies}", home=tmp_path
    )
    one_error_line(res, str(missing), "not a task folder")


@pytest.mark.parametrize(
    ("tasks", "words"),
    [
        ("term:no-such-family?size=4", ("unknown family 'no-such-family'", "note-mkdir")),
        ("rg:no_such_family?seed=0&size=4", ("no_such_family", "not registered")),
    ],
    ids=["term", "rg"],
)
def test_train_on_a_task_family_that_does_not_exist(
    tmp_path: Path, tasks: str, words: tuple[str, ...]
) -> None:
    res = rockroll("train", str(_train_config(tmp_path, tasks)), home=tmp_path)
    one_error_line(res, *words)
    assert not (tmp_path / "run" / "checkpoints").exists()  # refused before training


def test_train_on_a_config_that_is_missing(tmp_path: Path) -> None:
    one_error_line(rockroll("train", str(tmp_path / "nope.yaml"), home=tmp_path), "nope.yaml")


def test_bench_run_on_a_missing_folder(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    res = rockroll("bench", "run", str(missing), "--out", str(tmp_path / "o"), home=tmp_path)
    one_error_line(res, str(missing), "neither a task folder nor a suite")
    assert not (tmp_path / "o").exists()


def test_bench_run_names_the_suite_of_a_bad_seed(tmp_path: Path) -> None:
    # The task layer refuses a seed that is not a number, naming the suite and the options.
    res = rockroll("bench", "run", "rg:countdown?seed=abc", "--out", str(tmp_path), home=tmp_path)
    one_error_line(res, "rg:countdown", "seed and size must be integers")


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("agent", "run", "x", "--model", "nonsense:thing"), ("--model", "'nonsense:thing'")),
        (("agent", "run", "x", "--model", "gpt-4o"), ("--model", "'gpt-4o'", "scripted:PATH")),
        (("model", "serve", "no-such-model"), ("'no-such-model'", "smollm2")),
    ],
    ids=["unknown-prefix", "bare-name", "model-serve"],
)
def test_a_bad_model_spec(tmp_path: Path, args: tuple[str, ...], words: tuple[str, ...]) -> None:
    one_error_line(rockroll(*args, home=tmp_path), *words)


# The user errors the CLI itself finds (UsageError), each with the option it is about.
CLI_REFUSALS = [
    (("sandbox", "exec", "sb-1"), "no command given: rockroll sandbox exec ID -- CMD"),
    (("sandbox", "rm"), "name sandboxes to remove, or pass --all"),
    (("sandbox", "create", "--env", "FOO"), "--env 'FOO' must look like NAME=value"),
    (("token", "create", "ci", "--max-execs", "0"), "--max-execs must be 1 or more"),
    (("token", "create", "ci", "--max-pids", "-1"), "--max-pids must be 0 or more"),
    (("token", "revoke", "tok-nope"), "no live token 'tok-nope'"),
    (("agent", "run", "x"), "--model is required for a new session"),
    (("agent", "run", "x", "--resume", "abc"), "--resume continues a saved session"),
    (("bench", "run", "humaneval", "--agent", "nosuch"), "unknown agent 'nosuch'"),
    (("bench", "run", "humaneval", "--agent", "harness"), "needs --model"),
    (("bench", "report", "no-results"), "bench report: no folder no-results"),
]


@pytest.mark.parametrize(("args", "words"), CLI_REFUSALS, ids=lambda v: "-".join(v)[:40])
def test_cli_refusals_are_one_line(tmp_path: Path, args: tuple[str, ...], words: str) -> None:
    extra = ("--db", str(tmp_path / "service.db")) if args[0] == "token" else ()
    one_error_line(rockroll(*args, *extra, home=tmp_path), words)


def test_cli_refusals_raise_usage_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """In process too: `main` returns 1 and prints the one line (no SandboxError any more)."""
    monkeypatch.setenv("ROCKROLL_HOME", str(tmp_path))
    assert main(["sandbox", "rm"]) == 1
    assert capsys.readouterr().err == "error: name sandboxes to remove, or pass --all\n"
    from rockroll.cli.common import env_pairs

    with pytest.raises(UsageError, match="--env 'A' must look like NAME=value"):
        env_pairs(["A"])


def test_markup_in_a_message_is_printed_as_written(tmp_path: Path) -> None:
    # rich would read "[red]" as a style and drop it; the message must come out verbatim.
    res = rockroll("sandbox", "create", "--env", "[red]x", home=tmp_path)
    one_error_line(res, "--env '[red]x' must look like NAME=value")


def test_a_message_on_several_lines_is_printed_on_one() -> None:
    exc = TaskError("t/1", "invalid", "first line\n  second line\n")
    assert one_line(exc) == "t/1: first line second line"


def test_usage_errors_of_the_parser_exit_2(tmp_path: Path) -> None:
    bad = rockroll("bench", "run", "x", "--jobs", "many", home=tmp_path)
    assert bad.returncode == 2 and "expected a whole number, got 'many'" in bad.stderr, bad.stderr
    zero = rockroll("bench", "run", "x", "-j", "0", home=tmp_path)
    assert zero.returncode == 2 and "-j/--jobs: must be at least 1, got 0" in zero.stderr
    empty = tmp_path / "empty-suite"
    empty.mkdir()
    none = rockroll("bench", "run", str(empty), home=tmp_path)
    assert none.returncode == 1 and "holds no task folders" in none.stderr, none.stderr
    assert not (tmp_path / "runs").exists() and "Traceback" not in zero.stderr + none.stderr
    dashes = rockroll("image", "ls", "--", "x", home=tmp_path)
    assert dashes.returncode == 2 and "'--' introduces a command" in dashes.stderr
    assert "Traceback" not in bad.stderr + dashes.stderr
    nothing = rockroll("sandbox", home=tmp_path)
    assert nothing.returncode == 2 and "usage: rockroll" in nothing.stdout
