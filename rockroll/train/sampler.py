"""A run's tasks: loaded and checked before training, then taken in a seeded order."""

from __future__ import annotations

import random

from rockroll.errors import ConfigError, TaskError
from rockroll.tasks.schema import Task
from rockroll.tasks.suites import load_suite


def load_tasks(spec: str, key: str) -> list[Task]:
    """A suite's tasks; refused before training when any cannot load or has no verifier."""
    try:
        items = load_suite(spec)
    except (FileNotFoundError, ValueError) as exc:
        raise ConfigError(f"{key}: {exc}") from None
    tasks = []
    for item in items:
        if isinstance(item, TaskError):
            raise ConfigError(f"{key}: a task of {spec!r} cannot load: {item}")
        v = item.verifier
        if (v.kind == "python" and not v.function) or (v.kind == "script" and not v.command):
            raise ConfigError(
                f"{key}: task {item.id} has no verifier, so episodes cannot be rewarded; "
                "train only on tasks that can be checked"
            )
        tasks.append(item)
    if not tasks:
        raise ConfigError(f"{key}: {spec!r} holds no tasks")
    return tasks


class TaskSampler:
    """Tasks in a fresh seeded order each epoch; its position is part of a checkpoint."""

    def __init__(self, tasks: list[Task], seed: int) -> None:
        self.tasks, self.seed = tasks, seed
        self.epoch, self.index = 0, 0
        self.order = self._order()

    def _order(self) -> list[int]:
        order = list(range(len(self.tasks)))
        random.Random(self.seed * 7919 + self.epoch).shuffle(order)
        return order

    def take(self, n: int) -> list[Task]:
        out = []
        for _ in range(n):
            if self.index >= len(self.order):
                self.epoch, self.index = self.epoch + 1, 0
                self.order = self._order()
            out.append(self.tasks[self.order[self.index]])
            self.index += 1
        return out

    def state(self) -> dict:
        return {"epoch": self.epoch, "index": self.index}

    def restore(self, state: dict) -> None:
        self.epoch, self.index = state["epoch"], state["index"]
        self.order = self._order()
