"""Training with `rollout.mode: ray` on a real local Ray cluster of two nodes: rollout workers
spread over the nodes, the trainer on its own actor, and a worker killed mid-episode."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")
pytest.importorskip("torch")

from ray.cluster_utils import Cluster  # noqa: E402

from rockroll.models.local import tiny_random_model  # noqa: E402
from rockroll.tasks.suites import load_suite  # noqa: E402
from rockroll.train.config import parse_config  # noqa: E402
from rockroll.train.distributed import run_on_ray  # noqa: E402
from rockroll.train.episodes import Job  # noqa: E402
from rockroll.train.expert import Expert  # noqa: E402
from rockroll.train.rollouts import Rollouts  # noqa: E402
from rockroll.train.rollouts.ray_workers import RayRollouts  # noqa: E402

NODE = {"num_cpus": 1, "object_store_memory": 80 << 20}
CONFIG = {
    "model": "local:tiny-random",
    "tasks": "term:count-lines?seed=0&size=4",
    "steps": 2,
    "lr": 1e-3,
    "rollout": {
        "group_size": 2,
        "tasks_per_step": 2,
        "max_turns": 1,
        "max_tokens_per_turn": 6,
        "workers": 2,
        "mode": "ray",
    },
    "ray": {"rollout_workers": 2, "worker_cpus": 1},
    "tensorboard": False,
}


@pytest.fixture(scope="module")
def cluster(base_image: str):  # type: ignore[no-untyped-def]
    cluster = Cluster(initialize_head=True, head_node_args=NODE)
    cluster.add_node(**NODE)
    ray.init(address=cluster.address, namespace="rockroll-train-test", log_to_driver=False)
    try:
        cluster.wait_for_nodes()
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()


@pytest.mark.slow
def test_a_two_node_run_trains_with_workers_on_both_nodes(cluster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cfg = parse_config(CONFIG | {"out": str(tmp_path / "run")})
    evals = run_on_ray(cfg)
    assert evals == []  # no eval tasks configured
    steps = [json.loads(line) for line in (cfg.out / "metrics.jsonl").open()]
    assert [m["step"] for m in steps] == [1, 2]
    assert all(m["episodes"] == 4 and m["dropped"] == 0 for m in steps)
    assert max(m["rollout_nodes"] for m in steps) == 2  # episodes ran on both nodes
    assert [m["policy_version"] for m in steps] == [0, 1]  # weights pushed after each update
    assert (cfg.out / "checkpoints" / "step-000002").is_dir()


@pytest.mark.slow
def test_a_worker_killed_mid_episode_is_replaced_and_its_episode_resampled(
    cluster, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    cfg = parse_config(CONFIG | {"out": str(tmp_path / "run")})
    [task] = load_suite("term:count-lines?seed=0&size=1")
    # An expert whose first command takes a while: its replay is the episode's first 6 s.
    slow = Expert(task.id, ["```bash\nsleep 6\n```", "```bash\nsubmit\n```"])
    rollouts = RayRollouts(cfg, plan=lambda slot: [], log=lambda line: None)
    try:
        assert isinstance(rollouts, Rollouts)
        assert len(set(rollouts.nodes())) == 2
        rollouts.push(tiny_random_model(seed=0).model, version=3)
        jobs = [Job(task, seed, 1, slow) for seed in range(2)]
        victim = rollouts.workers[0]
        pid = ray.get(victim.pid.remote())
        killer = threading.Timer(3.0, lambda: ray.kill(victim))
        started = time.monotonic()
        killer.start()
        episodes = rollouts.collect(jobs)
        killer.join()
        assert time.monotonic() - started > 6 + 3  # the killed episode ran again from its start
        assert rollouts.restarts == 1 and victim not in rollouts.workers
        assert ray.get(rollouts.workers[0].pid.remote()) != pid
        assert [e.seed for e in episodes] == [0, 1]
        assert all(e.trajectory is not None and e.infra_error is None for e in episodes)
        assert all(e.version == 3 for e in episodes)  # the replacement got the weights
    finally:
        rollouts.close()
