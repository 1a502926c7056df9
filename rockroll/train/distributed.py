"""A whole training run on a Ray cluster (`rollout.mode: ray`): the trainer on an actor of its
own, its rollouts on worker actors spread over the nodes (`rollouts.ray_workers`)."""

from __future__ import annotations

import ray

from rockroll.train.config import TrainConfig
from rockroll.train.rollouts.ray_workers import connect
from rockroll.train.trainer import Trainer


class TrainerHost:
    """The trainer on its own actor: it builds the run there and runs it to the end."""

    def __init__(self, cfg_json: str) -> None:
        self.trainer = Trainer(TrainConfig.model_validate_json(cfg_json))

    def run(self, resume: bool) -> list[dict]:
        return [e.__dict__ for e in self.trainer.run(resume=resume)]


def run_on_ray(cfg: TrainConfig, resume: bool = False) -> list[dict]:
    """Run a whole training on the cluster, the trainer on an actor of its own."""
    connect(cfg.ray.address)
    host = ray.remote(num_cpus=0)(TrainerHost).remote(cfg.model_dump_json())
    try:
        return ray.get(host.run.remote(resume))
    finally:
        ray.kill(host)
