"""Gymnasium environments: one task in one sandbox, driven by the agent's tool calls.

env = make("humaneval/0")
obs, info = env.reset()
obs, reward, terminated, truncated, info = env.step({"tool": "bash", "command": "ls"})

With gymnasium installed (`pip install 'rockroll[gym]'`), `TaskEnv` is a `gymnasium.Env` and
importing this package registers rockroll's tasks under Gymnasium ids (`rockroll.envs.gym_ids`):
`gymnasium.make("rockroll/rg-countdown-v0")`, `gymnasium.make("rockroll/task-v0", task=PATH)`.
"""

from rockroll.envs.base import HAVE_GYMNASIUM
from rockroll.envs.registry import make, register, registered
from rockroll.envs.task_env import Action, TaskEnv

__all__ = ["Action", "TaskEnv", "make", "register", "registered"]

if HAVE_GYMNASIUM:
    from rockroll.envs.gym_ids import register_gym_ids

    register_gym_ids()
