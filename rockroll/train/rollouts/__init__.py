"""Where a training run's episodes come from: one `Rollouts` interface, one implementation per
`rollout.mode` (`sync`, `async`, `ray`), picked by `open_rollouts`."""

from __future__ import annotations

from collections.abc import Callable

from rockroll.errors import ConfigError
from rockroll.models.local import LocalModel
from rockroll.train.config import TrainConfig
from rockroll.train.rollouts.asynchronous import AsyncRollouts
from rockroll.train.rollouts.base import Plan, Rollouts, Taken
from rockroll.train.rollouts.sync import SyncRollouts

__all__ = ["Plan", "Rollouts", "Taken", "open_rollouts"]


def open_rollouts(
    cfg: TrainConfig, policy: LocalModel, plan: Plan, log: Callable[[str], None] = print
) -> Rollouts:
    """The rollouts `cfg.rollout.mode` names; `policy` is the learner's (in-process modes
    decode with it), `plan` makes each group's jobs."""
    mode = cfg.rollout.mode
    if mode == "async":
        return AsyncRollouts(policy, cfg.rollout, cfg.asynchronous, plan, log=log)
    if mode == "ray":
        try:
            from rockroll.train.rollouts.ray_workers import RayRollouts
        except ImportError as exc:
            raise ConfigError(
                f"rollout.mode: ray needs Ray ({exc}); install it with pip install 'rockroll[ray]'"
            ) from None
        return RayRollouts(cfg, plan, log)
    return SyncRollouts(policy, cfg.rollout, plan)
