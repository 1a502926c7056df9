"""Collecting episodes: each episode holds the policy's `joined` so its calls share batches."""

from __future__ import annotations

import threading
from typing import Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from rockroll.agent.local import tiny_random_model
from rockroll.train import rollout
from rockroll.train.config import RolloutConfig


def _fake_episodes(monkeypatch: pytest.MonkeyPatch, workers: int) -> list[Any]:
    """Replace the episode with a record of what it saw; `workers` of them run at once."""
    together = threading.Barrier(workers)
    seen: list[Any] = []

    def episode(policy: Any, job: rollout.Job, agent_cfg: Any, cfg: RolloutConfig) -> int:
        together.wait(5)
        batcher = getattr(policy, "_batcher", None)
        seen.append(None if batcher is None else batcher._joined)
        together.wait(5)
        return job.seed

    monkeypatch.setattr(rollout, "run_episode", episode)
    return seen


def test_every_running_episode_is_joined_to_a_local_policy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    policy = tiny_random_model()
    seen = _fake_episodes(monkeypatch, workers=4)
    jobs = [rollout.Job(task=None, seed=s) for s in range(8)]  # type: ignore[arg-type]
    done = rollout.collect(policy, jobs, RolloutConfig(workers=4))
    assert done == list(range(8))  # type: ignore[comparison-overlap]
    assert seen == [4] * 8
    assert policy._batcher._joined == 0


def test_policies_without_joined_are_collected_as_before(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen = _fake_episodes(monkeypatch, workers=2)
    jobs = [rollout.Job(task=None, seed=s) for s in range(2)]  # type: ignore[arg-type]
    assert rollout.collect(object(), jobs, RolloutConfig(workers=2)) == [0, 1]  # type: ignore[arg-type]
    assert seen == [None, None]
