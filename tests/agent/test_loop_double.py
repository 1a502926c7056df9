"""The agent loop on a test double (no root, no sandbox): formats, errors, limits, trajectory.

The same loop as tests/agent/test_loop.py, driven through the `Sandbox` interface on a
`DirSandbox` (commands run in a temporary directory of the host), so `make test-fast` covers the
harness. Commands use paths relative to the working directory: on the double an absolute path
would be the host's.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from rockroll.agent.loop import AgentConfig, AgentLoop
from rockroll.agent.trajectory import validate_atif
from rockroll.models import ScriptedModel
from rockroll.models.messages import Message, ToolCall
from tests.doubles import DirSandbox


@pytest.fixture
def box() -> Iterator[DirSandbox]:
    with DirSandbox(workdir="/work") as sandbox:
        yield sandbox


def call(name: str, **arguments: object) -> Message:
    return Message(
        role="assistant", tool_calls=[ToolCall(id=f"c-{name}", name=name, arguments=arguments)]
    )


def run(box: DirSandbox, replies: list, tmp_path: Path, **config: object):
    loop = AgentLoop(ScriptedModel(replies), config=AgentConfig(**config))
    path = tmp_path / "traj.json"
    result = loop.run("do the thing", box, workdir="/work", trajectory_path=path)
    return result, json.loads(path.read_text())


def observations(data: dict) -> list[str]:
    return [
        s["observation"]["results"][0]["content"]
        for s in data["steps"]
        if s["source"] == "agent" and s.get("observation")
    ]


def test_native_tool_calls_until_submit(box: DirSandbox, tmp_path: Path) -> None:
    replies = [
        call("bash", command="echo hi > a.txt && cat a.txt"),
        call("write_file", path="b.txt", content="bee"),
        call("read_file", path="b.txt"),
        call("submit"),
    ]
    result, data = run(box, replies, tmp_path)
    assert result.termination == "submitted", result.error
    assert box.read_text("/work/a.txt") == "hi\n"
    assert box.read_text("/work/b.txt") == "bee"
    seen = observations(data)
    assert seen[0] == "hi\n" and "wrote 3 bytes" in seen[1] and "bee" in seen[2]
    assert validate_atif(data) == []


def test_text_tool_calls_and_format_errors_until_the_limit(box: DirSandbox, tmp_path: Path) -> None:
    good = '<tool_call>{"name": "bash", "arguments": {"command": "echo ok"}}</tool_call>'
    replies = [good, "<tool_call>{not json}</tool_call>", "no call at all", "still nothing"]
    model = ScriptedModel(replies)
    loop = AgentLoop(model, config=AgentConfig(action_format="tool_call"))
    result = loop.run("do the thing", box, workdir="/work", trajectory_path=tmp_path / "t.json")
    data = json.loads((tmp_path / "t.json").read_text())
    assert result.termination == "format_errors" and result.turns == 4
    seen = [s["observation"]["results"][0]["content"] for s in data["steps"][2:]]
    no_call = "error: no tool call found: call a tool, or submit when done"
    assert seen[0] == "ok\n" and "is not valid JSON" in seen[1] and seen[2:] == [no_call] * 2
    assert model.seen[3][-1] == Message(
        role="user", content=f"Observation (format error):\n{no_call}"
    )


def test_bash_block_format(box: DirSandbox, tmp_path: Path) -> None:
    replies = ["Let me look.\n```bash\nmkdir -p d && ls\n```", "```bash\nsubmit\n```"]
    result, _ = run(box, replies, tmp_path, action_format="bash")
    assert result.termination == "submitted", result.error
    assert box.exists("/work/d") and box.is_dir("/work/d")


def test_bad_calls_are_answered_and_the_turn_limit_stops_the_loop(
    box: DirSandbox, tmp_path: Path
) -> None:
    replies = [call("nope"), call("bash"), *[call("bash", command="true")] * 5]
    result, data = run(box, replies, tmp_path, max_turns=3)
    assert result.termination == "max_turns"
    seen = observations(data)
    assert "unknown tool 'nope'" in seen[0]
    assert "missing required argument 'command'" in seen[1]


def test_a_failing_command_is_an_observation_not_an_error(box: DirSandbox, tmp_path: Path) -> None:
    replies = [call("bash", command="echo oops >&2; exit 3"), call("submit")]
    result, data = run(box, replies, tmp_path)
    assert result.termination == "submitted"
    first = observations(data)[0]
    assert "oops" in first and "3" in first
