"""TaskEnv as a real `gymnasium.Env`: Gymnasium's own checker, its registry and `gym.make`, seeded
resets that draw procedural tasks, the spaces, and the same draws without gymnasium installed."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import gymnasium as gym
import pytest
from gymnasium.utils.env_checker import check_env

import rockroll.envs  # registers the ids
from rockroll.envs import TaskEnv
from rockroll.errors import UsageError
from rockroll.tasks.terminal import FAMILIES

EVOEVAL = Path("/work/shared/tasks/evoeval/0")
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("env_id", "kwargs"),
    [("rockroll/rg-countdown-v0", {}), ("rockroll/task-v0", {"task": "term:fix-dir?size=1"})],
)
def test_gymnasiums_checker_passes_with_no_warning(
    base_image: str, env_id: str, kwargs: dict
) -> None:
    env = gym.make(env_id, max_steps=5, **kwargs)
    assert isinstance(env.unwrapped, gym.Env) and isinstance(env.unwrapped, TaskEnv)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the checker's complaints are warnings: each one fails
        check_env(env.unwrapped)
    env.close()


def test_ids_cover_the_families_and_make_gives_a_spec(base_image: str) -> None:
    ids = set(gym.registry)
    assert {"rockroll/task-v0", "rockroll/humaneval-v0", "rockroll/rg-basic-arithmetic-v0"} <= ids
    assert {f"rockroll/term-{family}-v0" for family in FAMILIES} <= ids
    env = gym.make("rockroll/term-fix-dir-v0")
    assert env.spec is not None and env.spec.id == "rockroll/term-fix-dir-v0"
    assert env.unwrapped.spec is env.spec or env.unwrapped.spec.id == env.spec.id
    env.close()
    with pytest.raises(UsageError, match="rockroll/task-v0 needs task="):
        gym.make("rockroll/task-v0")


def test_a_seeded_reset_draws_the_same_task_and_another_seed_another(base_image: str) -> None:
    one, two = gym.make("rockroll/rg-countdown-v0"), gym.make("rockroll/rg-countdown-v0")
    obs_a, info_a = one.reset(seed=7)
    obs_b, info_b = two.reset(seed=7)
    assert (obs_a, info_a["task_id"]) == (obs_b, info_b["task_id"])
    assert info_a["task_id"].startswith("rg/countdown/")
    # the unseeded resets that follow are the same sequence in both
    assert [one.reset()[1]["task_id"] for _ in range(3)] == [
        two.reset()[1]["task_id"] for _ in range(3)
    ]
    drawn = {one.reset(seed=s)[1]["task_id"] for s in range(5)}
    assert len(drawn) == 5, drawn
    one.close()
    two.close()


def test_a_drawn_puzzle_is_solved_through_gym_make(base_image: str) -> None:
    env = gym.make("rockroll/rg-basic-arithmetic-v0", max_steps=4)
    obs, info = env.reset(seed=11)
    task = env.unwrapped.task
    assert task is not None and task.id == info["task_id"] and obs == task.instruction
    assert task.solution is not None
    action = {"tool": "bash", "arguments": {"command": task.solution.script}}
    assert action in env.action_space
    obs, reward, terminated, truncated, _ = env.step(action)
    assert (reward, terminated, truncated) == (0.0, False, False)
    obs, reward, terminated, truncated, info = env.step({"tool": "submit", "arguments": {}})
    assert (reward, terminated, truncated) == (1.0, True, False), obs
    assert info["verify"]["passed"] is True
    env.close()


def test_one_task_folder_by_path_plays_the_same_task_every_episode(base_image: str) -> None:
    env = gym.make("rockroll/task-v0", task=str(EVOEVAL))
    ids = {env.reset(seed=s)[1]["task_id"] for s in (1, 2)} | {env.reset()[1]["task_id"]}
    assert len(ids) == 1
    env.close()


def test_the_spaces_hold_tool_calls_and_text() -> None:
    env = rockroll.envs.gym_ids.task_env("term:fix-dir?size=1")
    space = env.action_space
    assert {"tool": "bash", "arguments": {"command": "ls"}} in space
    assert {"tool": "bash", "arguments": {}} not in space  # command is required
    assert {"tool": "nope", "arguments": {}} not in space
    assert "ls" not in space and {"tool": "bash"} not in space
    space.seed(0)
    assert all(space.sample() in space for _ in range(20))
    assert "any text: ünïcode, tabs\t, newlines\n" in env.observation_space
    assert 3 not in env.observation_space
    with pytest.raises(UsageError, match="no options are known"):
        env.reset(options={"index": 2})


def test_without_gymnasium_the_same_seed_draws_the_same_task(base_image: str) -> None:
    with_gym = gym.make("rockroll/rg-countdown-v0")
    expected = with_gym.reset(seed=5)[1]["task_id"]
    with_gym.close()
    script = (
        "import sys, json\n"
        "sys.modules['gymnasium'] = None\n"  # import gymnasium now fails
        "from rockroll.envs.gym_ids import procedural_env\n"
        "import rockroll.envs.base as base\n"
        "env = procedural_env('countdown')\n"
        "_, info = env.reset(seed=5)\n"
        "print(json.dumps([base.HAVE_GYMNASIUM, env.observation_space, info['task_id']]))\n"
        "env.close()\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert json.loads(out.stdout.splitlines()[-1]) == [False, None, expected]
