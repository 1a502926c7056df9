"""mini-swe-agent, the real package, running a rockroll task end to end with its own agent loop
and a scripted model, its commands in a rockroll sandbox (never on this host)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import yaml
from minisweagent.agents.default import DefaultAgent
from minisweagent.config import builtin_config_dir
from minisweagent.environments import get_environment
from minisweagent.models.test_models import DeterministicModel, make_output

from rockroll.envs.mini_swe_agent import SUBMIT_MARKER, RockrollEnvironment
from rockroll.tasks.suites import load_one
from rockroll.tasks.terminal import expert_commands

TASK = "term:fix-dir?seed=3&size=1"


def test_mini_swe_agent_solves_a_task_in_a_rockroll_sandbox(
    base_image: str, tmp_path: Path
) -> None:
    config = yaml.safe_load((builtin_config_dir / "default.yaml").read_text())
    probe = f"/tmp/rockroll-mini-{uuid.uuid4().hex}"
    commands = [f"touch {probe} && hostname", *expert_commands(load_one(TASK))]
    outputs = [make_output(f"step {i}", [{"command": c}]) for i, c in enumerate(commands)]
    outputs.append(make_output("done", [{"command": f"echo {SUBMIT_MARKER}"}]))
    env = get_environment(
        {"environment_class": "rockroll.envs.mini_swe_agent.RockrollEnvironment", "task": TASK}
    )
    assert isinstance(env, RockrollEnvironment)
    trajectory = tmp_path / "run.traj.json"
    agent = DefaultAgent(
        DeterministicModel(outputs=outputs),
        env,
        **config["agent"] | {"output_path": trajectory, "step_limit": 20},
    )
    result = agent.run(load_one(TASK).instruction)
    assert result["exit_status"] == "Submitted", result
    assert not Path(probe).exists()  # the command ran in the sandbox, not here
    assert env.sandbox.exec(["test", "-e", probe]).exit_code == 0
    verdict = env.verify()
    assert verdict.passed, verdict
    saved = json.loads(trajectory.read_text())
    assert saved["info"]["config"]["environment_type"].endswith("RockrollEnvironment")
    observations = [m["content"] for m in saved["messages"] if m["role"] == "user"][1:]
    assert len(observations) == len(commands)
    assert observations[0] == "<returncode>0</returncode>\n<output>\nsandbox\n</output>"
    assert "<returncode>1</returncode>" in observations[1]  # the expert runs the broken script
    assert observations[-1].startswith("<returncode>0</returncode>"), observations
    env.cleanup()
    assert env.sandbox.closed


def test_output_is_interleaved_and_timeouts_and_failures_are_reported(base_image: str) -> None:
    env = RockrollEnvironment(timeout=2)
    try:
        out = env.execute({"command": "echo one; echo two >&2; echo three; exit 4"})
        assert out == {"output": "one\ntwo\nthree\n", "returncode": 4, "exception_info": ""}
        assert env.execute({"command": "pwd"})["output"] == "/app\n"
        assert env.execute({"command": "pwd"}, cwd="/tmp")["output"] == "/tmp\n"
        slow = env.execute({"command": "echo started; sleep 30"})
        assert slow["returncode"] == -1 and "timed out after 2 seconds" in slow["exception_info"]
        assert slow["output"] == "started\n"
        quick = env.execute({"command": "sleep 3; echo late"}, timeout=6)
        assert quick["output"] == "late\n"
        no_net = env.execute({"command": "getent hosts pypi.org || echo unresolved"})
        assert "unresolved" in no_net["output"]  # network none: the default
    finally:
        env.cleanup()
