"""Environments by name (`humaneval/0`, `rg:countdown`, `terminal:PATH`); families register here."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from rockroll.envs.task_env import TaskEnv

Factory = Callable[..., TaskEnv]
"""`factory(rest, **kwargs)`: `rest` is the name after the prefix."""

_FACTORIES: dict[str, Factory] = {}


def register(prefix: str, factory: Factory, *, replace: bool = False) -> None:
    """Make `make(prefix + rest, **kw)` call `factory(rest, **kw)`; clashes are refused."""
    if not prefix:
        raise ValueError("an environment prefix cannot be empty")
    if prefix in _FACTORIES and not replace:
        raise ValueError(f"environment prefix {prefix!r} is already registered")
    _FACTORIES[prefix] = factory


def registered() -> list[str]:
    """The known prefixes."""
    return sorted(_FACTORIES)


def make(name: str, **kwargs: Any) -> TaskEnv:
    """The environment called `name`; keyword arguments go to its family and to `TaskEnv`."""
    matches = [p for p in _FACTORIES if name.startswith(p)]
    if not matches:
        raise ValueError(
            f"unknown environment {name!r}; names start with one of: {', '.join(registered())}"
        )
    prefix = max(matches, key=len)
    return _FACTORIES[prefix](name[len(prefix) :], **kwargs)


def _terminal(path: str, **kwargs: Any) -> TaskEnv:
    from rockroll.tasks.suites import load_task

    return TaskEnv(load_task(Path(path).expanduser()), **kwargs)


def _humaneval(number: str, **kwargs: Any) -> TaskEnv:
    from rockroll.tasks.humaneval import load_humaneval

    if not number.isdigit():
        raise ValueError(f"humaneval/<N> needs a problem number, got {number!r}")
    return TaskEnv(load_humaneval([int(number)])[0], **kwargs)


def _procedural(
    dataset: str,
    *,
    seed: int | None = None,
    index: int = 0,
    size: int | None = None,
    **kwargs: Any,
) -> TaskEnv:
    from rockroll.tasks.procedural import load_procedural

    if seed is None:
        raise ValueError(f"rg:{dataset} needs a seed: make('rg:{dataset}', seed=...)")
    size = index + 1 if size is None else size
    if not 0 <= index < size:
        raise ValueError(f"rg:{dataset}: index must be in 0..{size - 1}, got {index}")
    return TaskEnv(load_procedural(dataset, seed=seed, size=size)[index], **kwargs)


register("terminal:", _terminal)
register("humaneval/", _humaneval)
register("rg:", _procedural)
