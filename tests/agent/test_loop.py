"""The agent loop with a scripted model in a real sandbox: formats, errors, limits, trajectory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rockroll import Sandbox
from rockroll.agent.loop import AgentConfig, AgentLoop
from rockroll.agent.trajectory import Trajectory, validate_atif
from rockroll.cli import main
from rockroll.models import ScriptedModel
from rockroll.models.messages import Message, ToolCall

SHARED = Path(__file__).resolve().parents[3] / "shared" / "tasks"


def call(name: str, **arguments: object) -> Message:
    return Message(
        role="assistant", tool_calls=[ToolCall(id=f"c-{name}", name=name, arguments=arguments)]
    )


def run(sandbox: Sandbox, replies: list, tmp_path: Path, **config: object):
    loop = AgentLoop(ScriptedModel(replies), config=AgentConfig(**config))
    path = tmp_path / "traj.json"
    result = loop.run("do the thing", sandbox, workdir="/root", trajectory_path=path)
    return result, json.loads(path.read_text())


def test_native_tool_calls_until_submit(sandbox: Sandbox, tmp_path: Path) -> None:
    replies = [
        call("bash", command="echo hi > /root/a.txt && cat /root/a.txt"),
        call("write_file", path="/root/b.txt", content="bee"),
        call("submit"),
    ]
    result, data = run(sandbox, replies, tmp_path)
    assert result.termination == "submitted" and result.turns == 3
    assert sandbox.read_text("/root/b.txt") == "bee"
    assert validate_atif(data) == []
    agent_steps = [s for s in data["steps"] if s["source"] == "agent"]
    assert agent_steps[0]["observation"]["results"][0]["content"] == "hi\n"
    assert agent_steps[1]["observation"]["results"][0]["content"] == (
        "wrote 3 bytes to /root/b.txt"
    )
    assert agent_steps[0]["tool_calls"][0]["function_name"] == "bash"
    assert data["extra"]["termination"] == "submitted"


def test_text_tool_call_format_and_format_errors(sandbox: Sandbox, tmp_path: Path) -> None:
    good = '<tool_call>{"name": "bash", "arguments": {"command": "echo ok"}}</tool_call>'
    replies = [good, "<tool_call>{not json}</tool_call>", "no call at all", "still nothing"]
    model = ScriptedModel(replies)
    loop = AgentLoop(model, config=AgentConfig(action_format="tool_call"))
    result = loop.run("do the thing", sandbox, workdir="/root", trajectory_path=tmp_path / "t.json")
    data = json.loads((tmp_path / "t.json").read_text())
    assert result.termination == "format_errors" and result.turns == 4
    observations = [s["observation"]["results"][0]["content"] for s in data["steps"][2:]]
    no_call = "error: no tool call found: call a tool, or submit when done"
    assert observations == [
        "ok\n",
        "error: tool call 1 is not valid JSON: Expecting property name enclosed in double quotes"
        " (at char 1)",
        no_call,
        no_call,  # the third error in a row (max_format_errors) ends the run
    ]
    # The model is told the same, as the observation of a format error.
    assert model.seen[3][-1] == Message(
        role="user", content=f"Observation (format error):\n{no_call}"
    )
    assert validate_atif(data) == []


def test_bash_block_format(sandbox: Sandbox, tmp_path: Path) -> None:
    replies = ["Let me look.\n```bash\nmkdir -p /root/d && ls /root\n```", "```bash\nsubmit\n```"]
    result, _ = run(sandbox, replies, tmp_path, action_format="bash")
    assert result.termination == "submitted"
    assert sandbox.exists("/root/d")


def test_unknown_tool_bad_arguments_and_repeats_are_answered(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    replies = [
        call("launch_rockets"),
        call("bash"),
        *[call("bash", command="true")] * 3,
        call("submit"),
    ]
    result, data = run(sandbox, replies, tmp_path)
    outputs = [s["observation"]["results"][0]["content"] for s in data["steps"][2:]]
    assert outputs == [
        "error: unknown tool 'launch_rockets'; the tools are: bash, read_file, write_file, edit,"
        " glob, grep, list_dir, todo, submit",
        "error: bash: missing required argument 'command' (string): the shell command to run",
        "(no output)",
        "(no output)",
        "(no output)\n[note: this is the same bash call 3 times in a row with the same arguments;"
        " try something different]",
        "submitted",
    ]
    assert result.termination == "submitted"


def test_limits_and_model_errors_keep_the_partial_trajectory(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    result, data = run(sandbox, [call("bash", command="true")] * 5, tmp_path, max_turns=2)
    assert result.termination == "max_turns" and result.turns == 2
    result, data = run(sandbox, [call("bash", command="echo one")], tmp_path)
    assert result.termination == "model_error" and "no more replies" in (result.error or "")
    assert len([s for s in data["steps"] if s["source"] == "agent"]) == 1
    assert Trajectory.model_validate(data).extra["termination"] == "model_error"


def oracle_replies(task_dir: Path) -> list[dict]:
    script = (task_dir / "solution.sh").read_text()
    return [
        {"content": "", "tool_calls": [{"name": "bash", "arguments": {"command": script}}]},
        {"content": "", "tool_calls": [{"name": "submit", "arguments": {}}]},
    ]


def test_scripted_harness_solves_evoeval_tasks_through_the_runner(
    base_image: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    suite, scripts = tmp_path / "suite", tmp_path / "scripts"
    scripts.mkdir()
    for name in ("0", "1", "2", "3", "7"):
        (suite / name).parent.mkdir(exist_ok=True)
        (suite / name).symlink_to(SHARED / "evoeval" / name)
        (scripts / f"{name}.json").write_text(json.dumps(oracle_replies(SHARED / "evoeval" / name)))
    out = tmp_path / "out"
    code = main(
        [
            "bench",
            "run",
            str(suite),
            "--agent",
            "harness",
            "--model",
            f"scripted:{scripts}",
            "-j",
            "2",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    results = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(results) == 5 and all(r["passed"] for r in results), results
    for r in results:
        data = json.loads(Path(r["trajectory"]).read_text())
        assert validate_atif(data) == [] and data["extra"]["termination"] == "submitted"


def test_agent_run_cli_json_and_errors(
    base_image: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    script = tmp_path / "replies.json"
    script.write_text(
        json.dumps(
            [
                {
                    "content": "",
                    "tool_calls": [{"name": "bash", "arguments": {"command": "echo 42"}}],
                },
                {"content": "", "tool_calls": [{"name": "submit", "arguments": {}}]},
            ]
        )
    )
    traj = tmp_path / "t.json"
    code = main(
        [
            "agent",
            "run",
            "print 42",
            "--model",
            f"scripted:{script}",
            "--json",
            "--trajectory",
            str(traj),
        ]
    )
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert code == 0
    assert lines[-1]["type"] == "result" and lines[-1]["termination"] == "submitted"
    assert [e["type"] for e in lines[:-1]] == ["step", "step", "end"]
    assert validate_atif(json.loads(traj.read_text())) == []
    assert main(["agent", "run", "x", "--model", "nonsense:thing"]) == 1
    assert "nonsense" in capsys.readouterr().err


def test_a_models_timeout_is_capped_by_the_runs_budget(sandbox: Sandbox, tmp_path: Path) -> None:
    replies = [call("bash", command="sleep 30", timeout=1000), call("submit")]
    result, data = run(sandbox, replies, tmp_path, command_timeout=1.0)
    observation = data["steps"][2]["observation"]["results"][0]["content"]
    # Killed after the run's 1 s, not the 1000 s asked for (nor the 30 s the sleep would take).
    assert observation.endswith("[timed out after 1 s; the command was killed]"), observation
    assert result.termination == "submitted" and result.seconds < 25


def test_long_runs_compact_their_context_and_record_it(sandbox: Sandbox, tmp_path: Path) -> None:
    from rockroll.agent.context import SUMMARY_PROMPT
    from rockroll.models.messages import Completion

    class Model(ScriptedModel):
        def complete(self, messages, tools, **kwargs):
            if messages[0].content == SUMMARY_PROMPT:
                return Completion(message=Message(role="assistant", content="wrote big files"))
            return super().complete(messages, tools, **kwargs)

    noisy = call("bash", command="python3 -c \"print('x' * 3000)\"")
    model = Model([*[noisy] * 12, call("submit")])
    model.context_window = 4000
    loop = AgentLoop(model, config=AgentConfig(keep_last=4))
    path = tmp_path / "traj.json"
    result = loop.run("make noise", sandbox, workdir="/root", trajectory_path=path)
    assert result.termination == "submitted"
    kinds = [e["type"] for e in result.events]
    assert "tier2" in kinds
    data = json.loads(path.read_text())
    assert validate_atif(data) == []
    system_steps = [s for s in data["steps"] if s["source"] == "system"]
    assert any("tier2" in s["message"] for s in system_steps)
    assert all(model.count_tokens(seen) <= 0.8 * 4000 for seen in model.seen)
    assert model.seen[-1][1].content == "make noise"


def test_agent_config_is_validated() -> None:
    import dataclasses

    from pydantic import ValidationError

    from rockroll.agent.loop import build_agent_config
    from rockroll.errors import ConfigError

    assert AgentConfig() == AgentConfig(max_turns=50, action_format="auto", keep_last=10)
    with pytest.raises(ValidationError, match="max_turnz"):
        AgentConfig(max_turnz=3)  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="action_format"):
        AgentConfig(action_format="xml")  # type: ignore[arg-type]
    config = AgentConfig(max_turns=4)
    with pytest.raises(ValidationError, match="max_turns"):
        config.max_turns = "many"  # type: ignore[assignment]
    # Callers derive configs with dataclasses.replace (validated too) and store them as dicts.
    assert dataclasses.replace(config, temperature=0.5).temperature == 0.5
    with pytest.raises(ValidationError, match="context_mode"):
        dataclasses.replace(config, context_mode="all")  # type: ignore[arg-type]
    assert dataclasses.asdict(config)["max_turns"] == 4
    assert build_agent_config({"max_turns": 7}).max_turns == 7
    with pytest.raises(ConfigError, match=r"^cli: unknown setting 'turns'; the settings are: max"):
        build_agent_config({"turns": 7}, where="cli")
    with pytest.raises(ConfigError, match="'max_seconds': Input should be a valid number"):
        build_agent_config({"max_seconds": "soon"})
