"""Environments by name: one task named in the tasks' grammar (`rockroll.tasks.suites`).

`make("humaneval/0")`, `make("rg:countdown?seed=1&size=5", index=2)`,
`make("term:fix-dir?seed=0&size=1")`, `make("path/to/task")`; a name that stands for several
tasks gives task number `index` (0 by default). `terminal:PATH` is the old name of a task
folder and still works. New families register with `register` (= `register_suite`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rockroll.envs.task_env import TaskEnv
from rockroll.errors import UsageError
from rockroll.tasks.suites import load_one, suite_names
from rockroll.tasks.suites import register_suite as register

__all__ = ["ALIASES", "make", "register", "registered"]

ALIASES = ("terminal:",)
"""Old environment prefixes: `terminal:PATH` is the task folder PATH."""


def make(name: str, *, index: int = 0, **kwargs: Any) -> TaskEnv:
    """The environment of task `index` of what `name` names; keyword arguments go to `TaskEnv`
    (max_steps, command_timeout, max_output, tools)."""
    for moved in ("seed", "size"):
        if moved in kwargs:
            raise UsageError(
                f"make({name!r}, {moved}=...): the {moved} is part of the name now, "
                f"as in 'rg:countdown?seed=1&size=5'"
            )
    if name.startswith("terminal:"):
        name = str(Path(name.removeprefix("terminal:")).expanduser())
    return TaskEnv(load_one(name, index), **kwargs)


def registered() -> list[str]:
    """The names and prefixes environments can be made from (a task folder's path works too)."""
    return sorted([*suite_names(), *ALIASES])
