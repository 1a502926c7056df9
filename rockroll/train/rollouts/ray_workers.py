"""Rollouts on a Ray cluster (`rollout.mode: ray`): long-lived worker actors spread over the
nodes.

Each `RolloutWorker` loads the policy once on its node (as the learner does, `load_policy`),
runs the episodes it is given there (its sandboxes are that node's, made by the local runtime)
with the same `collect` as a single-process run, and takes new weights after every update,
tagged with the policy version. `RayRollouts` splits a step's jobs over the workers; when a
worker dies (its process or node is lost), a new one is started, given the current weights,
and the dead worker's jobs run again, so an episode cut off mid-way is resampled and the step
goes on.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import ray
from ray.exceptions import RayActorError, WorkerCrashedError

from rockroll.train.config import TrainConfig
from rockroll.train.episodes import Episode, Job, collect
from rockroll.train.policy import load_policy
from rockroll.train.rollouts.base import Plan, Taken, take_planned

NAMESPACE = "rockroll-train"


class RolloutWorker:
    """The policy on one node, running episodes with the weights it was last given."""

    def __init__(self, cfg_json: str) -> None:
        self.cfg = TrainConfig.model_validate_json(cfg_json)
        self.policy = load_policy(self.cfg, device="cpu")
        self.version = -1

    def node(self) -> str:
        return ray.get_runtime_context().get_node_id()

    def pid(self) -> int:
        return os.getpid()

    def set_weights(self, version: int, weights: dict) -> int:
        self.policy.model.load_state_dict(weights)
        self.policy.sync_decode_copy()
        self.version = version
        return version

    def collect(self, jobs: list[Job], temperature: float | None) -> list[Episode]:
        episodes = collect(self.policy, jobs, self.cfg.rollout, temperature=temperature)
        node = self.node()
        for e in episodes:
            e.worker = f"{node[:8]}/{os.getpid()}"
            e.version = self.version
        return episodes


class RayRollouts:
    """The trainer's handle on its rollout workers: push weights, run jobs, survive deaths."""

    def __init__(self, cfg: TrainConfig, plan: Plan, log: Callable[[str], None] = print) -> None:
        self.cfg, self.plan, self.log = cfg, plan, log
        connect(cfg.ray.address)
        self._actor = ray.remote(num_cpus=cfg.ray.worker_cpus)(RolloutWorker)
        self.workers = [self._start() for _ in range(cfg.ray.rollout_workers)]
        self.weights: Any = None
        self.version = -1
        self.restarts = 0

    def _start(self) -> Any:
        return self._actor.options(scheduling_strategy="SPREAD").remote(self.cfg.model_dump_json())

    def nodes(self) -> list[str]:
        return ray.get([w.node.remote() for w in self.workers])

    def take(self, n: int) -> Taken:
        """A step's groups, run on the workers; where they ran and with which weights."""
        taken = take_planned(self.plan, n, self.collect)
        taken.metrics = worker_metrics(taken.episodes)
        return taken

    def push(self, model: Any, version: int) -> None:
        """Send the trainer's weights to every worker (one object, read by all)."""
        self.weights = ray.put({k: v.detach().cpu() for k, v in model.state_dict().items()})
        self.version = version
        for worker in list(self.workers):
            self._call(worker, lambda w: ray.get(w.set_weights.remote(version, self.weights)))

    def collect(self, jobs: list[Job], temperature: float | None = None) -> list[Episode]:
        """Run every job on the workers; episodes come back in the order of `jobs`."""
        jobs = [_portable(j) for j in jobs]
        n = len(self.workers)
        parts = [list(range(i, len(jobs), n)) for i in range(n)]
        pending = {
            worker.collect.remote([jobs[i] for i in part], temperature): (worker, part)
            for worker, part in zip(self.workers, parts, strict=True)
            if part
        }
        out: list[Episode | None] = [None] * len(jobs)
        while pending:
            [ref], _ = ray.wait(list(pending), num_returns=1)
            worker, part = pending.pop(ref)
            try:
                episodes = ray.get(ref)
            except (RayActorError, WorkerCrashedError) as exc:
                fresh = self._replace(worker, exc)
                retry = fresh.collect.remote([jobs[i] for i in part], temperature)
                pending[retry] = (fresh, part)
                continue
            for i, episode in zip(part, episodes, strict=True):
                out[i] = episode
        return [e for e in out if e is not None]

    def _call(self, worker: Any, call: Callable[[Any], Any]) -> Any:
        try:
            return call(worker)
        except (RayActorError, WorkerCrashedError) as exc:
            return call(self._replace(worker, exc))

    def _replace(self, dead: Any, why: Exception) -> Any:
        """A new worker in place of a dead one, holding the current weights."""
        if self.restarts >= self.cfg.ray.max_worker_restarts:
            raise RuntimeError(
                f"rollout workers died {self.restarts + 1} times (last: {why}); see ray.max_"
                "worker_restarts"
            ) from why
        self.restarts += 1
        self.log(f"a rollout worker died ({type(why).__name__}); starting another, resampling")
        fresh = self._start()
        if self.weights is not None:
            ray.get(fresh.set_weights.remote(self.version, self.weights))
        self.workers[self.workers.index(dead)] = fresh
        return fresh

    def close(self) -> None:
        for worker in self.workers:
            ray.kill(worker)
        self.workers = []


def worker_metrics(episodes: list[Episode]) -> dict:
    """Where a step's episodes ran and the policy version they used."""
    done = [e for e in episodes if e.trajectory is not None]
    return {
        "rollout_nodes": len({e.worker.split("/")[0] for e in done}),
        "policy_version": min((e.version for e in done if e.version is not None), default=-1),
    }


def connect(address: str | None) -> None:
    """Join the cluster at `address` (or RAY_ADDRESS), else start a local one; once."""
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    ray.init(address=address, namespace=NAMESPACE, log_to_driver=True)


def _portable(job: Job) -> Job:
    """The job without its expert's recorded states (snapshots live on this node only): a
    worker elsewhere reaches the expert's turn by replay."""
    if job.expert is None or job.expert.states is None:
        return job
    return replace(job, expert=replace(job.expert, states=None))
