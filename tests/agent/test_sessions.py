"""Saved sessions: `agent run --resume` after a kill -9 or a limit, `agent chat`, bad models."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rockroll.agent.sessions import load
from rockroll.agent.trajectory import validate_atif
from rockroll.cli import main
from rockroll.errors import SandboxError
from rockroll.sandbox.sdk import Sandbox


@pytest.fixture(autouse=True)
def sessions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "sessions"
    monkeypatch.setenv("ROCKROLL_SESSIONS", str(folder))
    return folder


def _script(path: Path, *replies: dict | str) -> str:
    path.write_text(json.dumps(list(replies)))
    return f"scripted:{path}"


def _call(name: str, **arguments: object) -> dict:
    return {"content": "", "tool_calls": [{"name": name, "arguments": arguments}]}


def _results(session: str) -> list[str]:
    state = load(session).state
    return [
        r.content
        for s in state.trajectory.steps
        if s.source == "agent" and s.observation
        for r in s.observation.results
    ]


def test_resume_after_kill_9_reconnects_to_the_sandbox(
    base_image: str, tmp_path: Path, sessions: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = _script(
        tmp_path / "first.json",
        _call("write_file", path="notes.txt", content="kept across the crash\n"),
        _call("bash", command="sleep 60"),
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "rockroll.cli", "agent", "run", "take notes", "--model", first],
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ | {"PYTHONUNBUFFERED": "1"},
    )
    assert proc.stderr is not None
    session = ""
    deadline = time.monotonic() + 60
    for line in proc.stderr:
        session = line.split()[1] if line.startswith("session ") else session
        if line.startswith("turn 1:"):
            break
        assert time.monotonic() < deadline
    # Kill it while turn 2's command runs: wait until the sleep is seen inside the sandbox.
    running = Sandbox.connect(load(session[:8]).sandbox_id)
    while running.exec(["pgrep", "-x", "sleep"]).exit_code != 0:
        assert proc.poll() is None and time.monotonic() < deadline, "turn 2 never started"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    saved = load(session[:8])
    assert saved.state.turns == 1 and saved.state.termination is None
    sandbox_id = saved.sandbox_id

    rest = _script(tmp_path / "rest.json", _call("bash", command="cat notes.txt"), _call("submit"))
    code = main(["agent", "run", "--resume", session[:8], "--model", rest, "--json"])
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert code == 0, lines
    assert lines[-1]["termination"] == "submitted" and lines[-1]["turns"] == 3
    assert _results(session)[-2] == "kept across the crash\n"  # cat of the file turn 1 wrote
    data = json.loads(Path(lines[-1]["trajectory"]).read_text())
    assert validate_atif(data) == []
    assert [s["source"] for s in data["steps"]] == ["system", "user", "agent", "agent", "agent"]
    assert load(session).sandbox_id == sandbox_id  # the same sandbox, not a rebuilt one
    with pytest.raises(SandboxError):
        Sandbox.connect(sandbox_id).exec(["true"])  # closed at the end of the resumed run


def test_resume_of_a_stopped_run_replays_into_a_new_sandbox(
    base_image: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = _script(
        tmp_path / "first.json",
        _call("bash", command="mkdir -p src && echo one > src/a.txt"),
        _call("edit", path="src/a.txt", old_string="one", new_string="two"),
    )
    code = main(["agent", "run", "edit", "--model", first, "--max-turns", "2", "--json"])
    record = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert code == 3 and record["termination"] == "max_turns"
    rest = _script(tmp_path / "rest.json", _call("read_file", path="src/a.txt"), _call("submit"))
    code = main(["agent", "run", "--resume", record["session_id"], "--model", rest])
    assert code == 0
    assert "replaying" in capsys.readouterr().err
    assert _results(record["session_id"])[-2] == "    1\ttwo"  # the replayed edit is there
    assert load(record["session_id"]).state.turns == 4


def test_resume_refuses_what_it_cannot_continue(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["agent", "run", "--resume", "nope", "--model", "scripted:x"]) == 1
    assert "no session 'nope'" in capsys.readouterr().err
    assert main(["agent", "run", "x", "--resume", "abc"]) == 1
    assert "give no instruction" in capsys.readouterr().err


def test_chat_asks_before_running_commands(
    base_image: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    model = _script(
        tmp_path / "chat.json",
        _call("bash", command="echo hi > made.txt"),
        "Made made.txt.",
        _call("bash", command="rm made.txt"),
        "Left it alone.",
        _call("read_file", path="made.txt"),
        "It says hi.",
    )
    user = "make a file\ny\nnow delete it\nn\nwhat is in it?\n/exit\n"
    monkeypatch.setattr(sys, "stdin", io.StringIO(user))
    assert main(["agent", "chat", "--model", model]) == 0
    captured = capsys.readouterr()
    assert "run echo hi > made.txt?" in captured.err and "run rm made.txt?" in captured.err
    assert "Made made.txt." in captured.out and "It says hi." in captured.out
    [record] = [
        json.loads(p.read_text())
        for p in Path(os.environ["ROCKROLL_SESSIONS"]).glob("*/session.json")
    ]
    session = record["id"]
    results = _results(session)
    assert "refused by the user" in results[1]
    assert results[2] == "    1\thi"  # the file the approved command made, not deleted
    steps = load(session).state.trajectory.steps
    users = [s.message for s in steps if s.source == "user"]
    assert users == ["make a file", "now delete it", "what is in it?"]
    assert load(session).state.termination == "answered"


def test_a_garbage_model_ends_with_format_errors_and_keeps_the_trajectory(
    base_image: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = _script(tmp_path / "junk.json", "\x00\x01 {{{", "<tool_call>{nope", "lorem ipsum")
    code = main(["agent", "run", "do it", "--model", model, "--json"])
    record = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert code == 3 and record["termination"] == "format_errors" and record["turns"] == 3
    data = json.loads(Path(record["trajectory"]).read_text())
    assert validate_atif(data) == [] and len(data["steps"]) == 5
    results = [s["observation"]["results"][0]["content"] for s in data["steps"][2:]]
    no_call = "error: no tool call found: call a tool, or submit when done"
    assert results == [
        no_call,
        "error: tool call 1 is not valid JSON: Expecting property name enclosed in double quotes"
        " (at char 1)",
        no_call,
    ]


def test_an_unreachable_endpoint_is_a_model_error_with_the_partial_trajectory(
    base_image: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = "openai:some-model@http://127.0.0.1:9/v1"
    code = main(["agent", "run", "do it", "--model", spec, "--retries", "1", "--json"])
    captured = capsys.readouterr()
    record = json.loads(captured.out.splitlines()[-1])
    assert code == 4 and record["termination"] == "model_error"
    assert "cannot reach http://127.0.0.1:9/v1/chat/completions" in record["error"]
    assert "after 2 attempts" in record["error"]
    data = json.loads(Path(record["trajectory"]).read_text())
    assert validate_atif(data) == [] and [s["source"] for s in data["steps"]] == [
        "system",
        "user",
    ]
    assert data["extra"]["termination"] == "model_error"


def test_unknown_model_specs_are_named(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["agent", "run", "x", "--model", "gpt-4o"]) == 1
    message = capsys.readouterr().err
    assert "gpt-4o" in message and "openai:MODEL" in message
    assert main(["agent", "run", "x"]) == 1
    assert "--model is required" in capsys.readouterr().err


def test_sessions_lists_what_was_saved(
    base_image: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = _script(tmp_path / "one.json", _call("submit"))
    assert main(["agent", "run", "quick one", "--model", model]) == 0
    capsys.readouterr()
    assert main(["agent", "sessions"]) == 0
    listing = capsys.readouterr().out
    assert "quick one" in listing and "submitted" in listing
