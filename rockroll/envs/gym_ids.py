"""rockroll's tasks under Gymnasium ids (registered by `import rockroll.envs` when gymnasium is
installed):

- `rockroll/rg-NAME-v0`: reasoning-gym's dataset NAME (`_` written `-`, as in
  `rockroll/rg-basic-arithmetic-v0`); every `reset()` draws a new puzzle from the environment's
  seed; `config={...}` is the dataset's configuration.
- `rockroll/term-FAMILY-v0`: a terminal family (`rockroll/term-fix-dir-v0`), drawn the same way.
- `rockroll/humaneval-v0`: one of HumanEval's 164 problems per reset.
- `rockroll/task-v0` with `task=NAME`: what NAME names in the tasks' grammar (a task folder,
  a folder of them, `humaneval/3`, `rg:countdown?seed=1&size=20`, `data:DATASET`); one task is
  played every episode, several are drawn from per reset.

Keyword arguments besides those go to `TaskEnv` (max_steps, command_timeout, max_output,
tools). Episodes end themselves (a submit, or `max_steps`), so no `TimeLimit` is added.
"""

from __future__ import annotations

from typing import Any

from rockroll.envs.task_env import TaskEnv
from rockroll.errors import TaskError, UsageError
from rockroll.tasks.schema import Task
from rockroll.tasks.suites import load_suite

NAMESPACE = "rockroll"
DRAW_SIZE = 1


def procedural_env(dataset: str, config: dict[str, Any] | None = None, **kwargs: Any) -> TaskEnv:
    """A reasoning-gym dataset's environment: a new puzzle per reset."""
    from rockroll.tasks.procedural import load_procedural

    load_procedural(dataset, seed=0, size=DRAW_SIZE, config=config)  # a bad config fails here

    def draw(seed: int) -> Task:
        return load_procedural(dataset, seed=seed, size=DRAW_SIZE, config=config)[0]

    return TaskEnv(draw, **kwargs)


def terminal_env(family: str, **kwargs: Any) -> TaskEnv:
    """A terminal family's environment: a new instance per reset."""
    from rockroll.tasks.terminal import load_terminal

    def draw(seed: int) -> Task:
        return load_terminal(family, seed=seed, size=DRAW_SIZE)[0]

    return TaskEnv(draw, **kwargs)


def task_env(task: str | None = None, **kwargs: Any) -> TaskEnv:
    """The environment of what `task` names: that task, or a draw among several."""
    if not task:
        raise UsageError(
            "rockroll/task-v0 needs task=: a task folder, or a name such as 'humaneval/3' "
            "or 'rg:countdown?seed=1&size=20'"
        )
    items = load_suite(task)
    for item in items:
        if isinstance(item, TaskError):
            raise item
    tasks = [t for t in items if isinstance(t, Task)]
    if len(tasks) == 1:
        return TaskEnv(tasks[0], **kwargs)
    return TaskEnv(lambda seed: tasks[seed % len(tasks)], **kwargs)


def humaneval_env(**kwargs: Any) -> TaskEnv:
    """HumanEval: one of its problems per reset."""
    return task_env("humaneval", **kwargs)


def gym_ids() -> dict[str, tuple[str, dict[str, Any]]]:
    """Every id: (entry point, its keyword arguments)."""
    import reasoning_gym.factory

    from rockroll.tasks.terminal import FAMILIES

    here = __name__
    ids: dict[str, tuple[str, dict[str, Any]]] = {
        f"{NAMESPACE}/task-v0": (f"{here}:task_env", {}),
        f"{NAMESPACE}/humaneval-v0": (f"{here}:humaneval_env", {}),
    }
    for name in sorted(reasoning_gym.factory.DATASETS):
        ids[f"{NAMESPACE}/rg-{name.replace('_', '-')}-v0"] = (
            f"{here}:procedural_env",
            {"dataset": name},
        )
    for family in sorted(FAMILIES):
        ids[f"{NAMESPACE}/term-{family}-v0"] = (f"{here}:terminal_env", {"family": family})
    return ids


def register_gym_ids() -> list[str]:
    """Register every id with gymnasium (again: a no-op); the ids."""
    import gymnasium

    ids = gym_ids()
    for env_id, (entry_point, kwargs) in ids.items():
        if env_id not in gymnasium.registry:
            gymnasium.register(env_id, entry_point=entry_point, kwargs=kwargs)
    return sorted(ids)
