"""Synchronous rollouts (`rollout.mode: sync`, the default): a step's episodes run in this
process, all at once, and the step waits for the last of them."""

from __future__ import annotations

from typing import Any

from rockroll.models.local import LocalModel
from rockroll.train.config import RolloutConfig
from rockroll.train.episodes import Episode, Job, collect
from rockroll.train.rollouts.base import Plan, Taken, take_planned


class SyncRollouts:
    """The learner's own policy runs the episodes, between updates."""

    def __init__(self, policy: LocalModel, cfg: RolloutConfig, plan: Plan) -> None:
        self.policy, self.cfg, self.plan = policy, cfg, plan

    def take(self, n: int) -> Taken:
        return take_planned(self.plan, n, self.collect)

    def collect(self, jobs: list[Job], temperature: float | None = None) -> list[Episode]:
        return collect(self.policy, jobs, self.cfg, temperature=temperature)

    def push(self, model: Any, version: int) -> None:
        """Nothing to send: the episodes decode with the learner's policy itself."""

    def close(self) -> None:
        """Nothing runs between steps."""
