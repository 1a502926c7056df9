"""What the trainer needs from a source of episodes, whatever runs them.

`Rollouts` is one interface with an implementation per `rollout.mode`: `sync` (this process, a
step waits for its episodes), `async` (worker threads beside the update) and `ray` (worker
actors on a Ray cluster). A `Plan` makes one group's jobs (a task's `group_size` episodes) for
a slot of the step; the trainer owns it, so which tasks run and from which start is decided in
one place, whatever the mode.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from rockroll.train.episodes import Episode, Job

Plan = Callable[[int], list[Job]]  # slot in the step -> that group's jobs


@dataclass
class Taken:
    """A step's episodes (group after group), the seconds spent waiting for them and the
    metrics the rollouts add to the step's row."""

    episodes: list[Episode]
    seconds: float
    metrics: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Rollouts(Protocol):
    """Episodes for the trainer: `take` a step's, `collect` given jobs (evaluation), `push` the
    learner's weights after an update, `close` at the end."""

    def take(self, n: int) -> Taken:
        """The episodes of `n` groups, each from the plan."""
        ...

    def collect(self, jobs: list[Job], temperature: float | None = None) -> list[Episode]:
        """Run `jobs` now, with the current weights; episodes in the order of `jobs`."""
        ...

    def push(self, model: Any, version: int) -> None:
        """The learner's weights, `version` updates applied (in-process rollouts share the
        learner's policy, so for them there is nothing to send)."""
        ...

    def close(self) -> None: ...


def take_planned(plan: Plan, n: int, collect: Callable[[list[Job]], list[Episode]]) -> Taken:
    """Plan `n` groups, then collect all their jobs at once (timed from when they start)."""
    jobs = [job for slot in range(n) for job in plan(slot)]
    started = time.monotonic()
    episodes = collect(jobs)
    return Taken(episodes, time.monotonic() - started)
