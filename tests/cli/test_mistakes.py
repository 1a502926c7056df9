"""Command-line mistakes a user makes, each answered by one line that names the command, the
problem and the fix: a forgotten `--`, a misspelt option, noun, verb or choice, words a command
does not take; `--version`; read-only verbs that leave nothing behind; help with an example."""

from __future__ import annotations

from pathlib import Path

import pytest

from rockroll.cli import build_parser, main


def one_line(capsys: pytest.CaptureFixture[str], *argv: str, status: int = 2) -> str:
    """The one stderr line of the refused command line; nothing on stdout."""
    assert main(list(argv)) == status
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert "Traceback" not in captured.err and captured.out == ""
    return lines[0]


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ROCKROLL_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("ROCKROLL_SERVER", raising=False)
    monkeypatch.setenv("COLUMNS", "300")
    return tmp_path


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (
            ["sandbox", "exec", "sb1", "ls", "-la"],
            "put the command after `--`: rockroll sandbox exec sb1 -- ls -la",
        ),
        (["sandbox", "exec", "sb1", "-la"], "rockroll sandbox exec sb1 -- -la"),
        (
            ["sandbox", "create", "--memroy", "1g"],
            "rockroll sandbox create: no option --memroy; did you mean --memory?",
        ),
        (["sandbx", "ls"], "rockroll: no noun 'sandbx'; did you mean `rockroll sandbox`?"),
        (
            ["sandbox", "lst"],
            "rockroll sandbox: no verb 'lst'; did you mean `rockroll sandbox ls`?",
        ),
        (["bench", "run", "x", "--safety", "enforc"], "did you mean 'enforce'?"),
        (
            ["train", "--stepz", "3", "c.yaml"],
            "rockroll train: no option --stepz; did you mean --steps?",
        ),
        (
            ["sandbox", "ls", "extra"],
            "rockroll sandbox ls: unexpected argument extra; see `rockroll sandbox ls --help`",
        ),
        (["sandbox", "exec"], "rockroll sandbox exec: the following arguments are required: id"),
        (["image", "ls", "--", "x"], "rockroll image ls: takes no command after `--`"),
        (["frobnicate"], "rockroll: no noun 'frobnicate'; one of: image, sandbox"),
    ],
)
def test_a_mistake_is_one_line_with_the_fix(
    capsys: pytest.CaptureFixture[str], argv: list[str], expected: str
) -> None:
    assert expected in one_line(capsys, *argv)


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("rockroll ") and out.split()[1][0].isdigit(), out


def test_read_only_verbs_leave_nothing_behind(
    capsys: pytest.CaptureFixture[str], home: Path
) -> None:
    missing = home / "no" / "such" / "run"
    line = one_line(capsys, "bench", "report", str(missing), status=1)
    assert f"no folder {missing}" in line and "--out folder of a `rockroll bench run`" in line
    assert not (home / "no").exists()
    line = one_line(capsys, "image", "rm", "nothere", status=1)
    assert "image 'nothere' does not exist, nothing removed" in line
    assert "image build" not in line  # removing something absent is not a reason to build it


def test_a_noun_alone_prints_its_own_verbs(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["token"]) == 2
    out = capsys.readouterr().out
    assert out.startswith("usage: rockroll token") and "revoke" in out


def test_every_verbs_help_ends_with_an_example() -> None:
    parser = build_parser()
    for noun, noun_parser in parser.commands.items():
        for verb, verb_parser in (noun_parser.commands or {noun: noun_parser}).items():
            help_text = verb_parser.format_help()
            assert "\nexample:\n  rockroll " in help_text, (noun, verb)
            example = help_text.rsplit("example:\n", 1)[1].split()
            words = example[1:3] if noun_parser.commands else example[1:2]
            assert words == ([noun, verb] if noun_parser.commands else [noun]), (noun, example)
