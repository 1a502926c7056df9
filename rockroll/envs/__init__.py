"""Gymnasium-style environments: one task in one sandbox, driven by the agent's tool calls.

env = make("humaneval/0")
obs, info = env.reset()
obs, reward, terminated, truncated, info = env.step({"tool": "bash", "command": "ls"})
"""

from rockroll.envs.registry import make, register, registered
from rockroll.envs.task_env import Action, TaskEnv

__all__ = ["Action", "TaskEnv", "make", "register", "registered"]
