"""Collecting episodes (each holds the policy's `joined` so its calls share batches), the
training sequences of a step's episodes, and planning a step's groups."""

from __future__ import annotations

import threading
from typing import Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from rockroll.agent.trajectory import AtifMetrics, Trajectory
from rockroll.models.local import tiny_random_model
from rockroll.train import episodes
from rockroll.train.config import RolloutConfig
from rockroll.train.rollouts.base import take_planned


def _fake_episodes(monkeypatch: pytest.MonkeyPatch, workers: int) -> list[Any]:
    """Replace the episode with a record of what it saw; `workers` of them run at once."""
    together = threading.Barrier(workers)
    seen: list[Any] = []

    def episode(policy: Any, job: episodes.Job, agent_cfg: Any, cfg: RolloutConfig) -> int:
        together.wait(5)
        batcher = getattr(policy, "_batcher", None)
        seen.append(None if batcher is None else batcher._joined)
        together.wait(5)
        return job.seed

    monkeypatch.setattr(episodes, "run_episode", episode)
    return seen


def test_every_running_episode_is_joined_to_a_local_policy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    policy = tiny_random_model()
    seen = _fake_episodes(monkeypatch, workers=4)
    jobs = [episodes.Job(task=None, seed=s) for s in range(8)]  # type: ignore[arg-type]
    done = episodes.collect(policy, jobs, RolloutConfig(workers=4))
    assert done == list(range(8))  # type: ignore[comparison-overlap]
    assert seen == [4] * 8
    assert policy._batcher._joined == 0


def test_policies_without_joined_are_collected_as_before(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen = _fake_episodes(monkeypatch, workers=2)
    jobs = [episodes.Job(task=None, seed=s) for s in range(2)]  # type: ignore[arg-type]
    assert episodes.collect(object(), jobs, RolloutConfig(workers=2)) == [0, 1]  # type: ignore[arg-type]
    assert seen == [None, None]


def _trajectory(session: str) -> Trajectory:
    traj = Trajectory(session_id=session)
    traj.add("user", "task")
    metrics = AtifMetrics(prompt_token_ids=[5, 6], completion_token_ids=[7, 8], logprobs=[-1.0] * 2)
    traj.add("agent", "reply", metrics=metrics)
    return traj


def _done(session: str, version: int | None, start: int = 0) -> episodes.Episode:
    return episodes.Episode(
        None,  # type: ignore[arg-type]
        0,
        _trajectory(session),
        1.0,
        True,
        "submitted",
        1,
        0.1,
        start=start,
        version=version,
    )


def test_sequences_mark_episodes_whose_weights_are_gone_and_group_by_task_and_start() -> None:
    taken = [
        _done("sync", None),  # nobody tracked versions
        _done("current", 3),  # sampled by the learner's weights now
        _done("stale", 2),  # sampled by weights one update older: mu stands in for pi_old
        episodes.unfinished(episodes.Job(None, 0), "infra_error"),  # type: ignore[arg-type]
        _done("resumed", 3, start=1),
        _done("next task", 3),
    ]
    seqs, groups = episodes.sequences_of(taken, group_size=5, version=3)
    assert [s.episode_id for s in seqs] == ["sync", "current", "stale", "resumed", "next task"]
    assert [s.old_is_mu for s in seqs] == [False, False, True, False, False]
    assert groups == [0, 0, 0, 1, 2]  # the resumed episode starts elsewhere: a group of its own
    seqs, _ = episodes.sequences_of(taken, group_size=5)  # no learner version: nothing is gone
    assert not any(s.old_is_mu for s in seqs)


def test_planned_rollouts_plan_every_slot_in_order_before_collecting() -> None:
    planned: list[int] = []
    collected: list[list[episodes.Job]] = []

    def plan(slot: int) -> list[episodes.Job]:
        planned.append(slot)
        return [episodes.Job(None, 10 * slot + g) for g in range(2)]  # type: ignore[arg-type]

    def collect(jobs: list[episodes.Job]) -> list[episodes.Episode]:
        assert planned == [0, 1, 2]  # all of the step's groups are planned first
        collected.append(jobs)
        return [episodes.unfinished(j, "x") for j in jobs]

    taken = take_planned(plan, 3, collect)
    assert [j.seed for j in collected[0]] == [0, 1, 10, 11, 20, 21]
    assert [e.seed for e in taken.episodes] == [0, 1, 10, 11, 20, 21]
    assert taken.seconds >= 0 and taken.metrics == {}
