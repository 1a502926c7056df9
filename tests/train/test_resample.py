"""Chunk-level initialized resampling: anchors, rollback, crucial forks, fork-based starts and
the IL fallback, in real sandboxes with a tiny random model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from rockroll.agent.trajectory import Trajectory
from rockroll.errors import ConfigError
from rockroll.models.local import tiny_random_model
from rockroll.sandbox.records import snapshots_dir
from rockroll.tasks.suites import load_suite
from rockroll.train.config import ResampleConfig, RolloutConfig, parse_config
from rockroll.train.episodes import Episode, agent_config, resumed_episode
from rockroll.train.expert import ExpertStates, ForcedModel, oracle_expert
from rockroll.train.resample import Fork, Resampler, teacher_experts
from rockroll.train.trainer import Trainer


@pytest.fixture(scope="module")
def fix_dir(base_image: str):  # type: ignore[no-untyped-def]
    [task] = load_suite("term:fix-dir?seed=0&size=1")
    return task


def _episode(task, start: int, passed: bool) -> Episode:  # type: ignore[no-untyped-def]
    return Episode(task, 0, Trajectory(), float(passed), passed, "submitted", 1, 0.1, start=start)


def test_parallel_anchors_spread_a_hard_tasks_group_and_a_crucial_fork_is_found(
    fix_dir, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    r = Resampler(
        ResampleConfig(enabled=True, window=4, init="replay"), RolloutConfig(), [fix_dir], tmp_path
    )
    expert = r.expert(fix_dir)
    assert expert is not None and expert.turns == 4  # sh run.sh, mkdir, sh run.sh, submit
    jobs = r.jobs(fix_dir, list(range(6)), policy=None)  # type: ignore[arg-type]
    assert [j.start for j in jobs] == [0, 2, 3, 0, 2, 3]
    assert all((j.expert is expert) == bool(j.start) for j in jobs)
    # Success only once the expert's fix (turn 1) is imposed: the fork before turn 1 is crucial.
    outcomes = {0: False, 1: False, 2: True, 3: True}
    for start, passed in outcomes.items():
        r.observe([_episode(fix_dir, start, passed)] * 2, step=1)
    assert r.crucial_forks() == {fix_dir.id: Fork(before=1, after=2)}
    assert r.stuck(fix_dir.id, Fork(before=1, after=2))
    # Solved from the start: plain episodes again, and the policy's success became the expert.
    r.cfg.sources = ["oracle"]
    r.observe([_episode(fix_dir, 0, True)] * 4, step=2)
    assert not r.hard(fix_dir.id)
    assert [j.start for j in r.jobs(fix_dir, [0, 1], policy=None)] == [0, 0]  # type: ignore[arg-type]
    state = json.loads(json.dumps(r.state()))
    again = Resampler(r.cfg, RolloutConfig(), [fix_dir], tmp_path)
    again.restore(state)
    assert again.state() == r.state()
    assert [json.loads(line)["source"] for line in (tmp_path / "experts.jsonl").open()] == [
        "oracle"
    ]


def test_sequential_rollback_moves_the_anchor_earlier_as_the_tail_is_mastered(
    fix_dir, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    cfg = ResampleConfig(enabled=True, mode="sequential", window=2, rollback_at=0.5, init="replay")
    r = Resampler(cfg, RolloutConfig(), [fix_dir], tmp_path)
    seen = []
    for _ in range(4):
        [start] = {j.start for j in r.jobs(fix_dir, [0, 1], policy=None)}  # type: ignore[arg-type]
        seen.append(start)
        r.observe([_episode(fix_dir, start, True)] * 2, step=1)
    assert seen == [3, 2, 1, 0]


def test_a_fork_starts_where_the_expert_left_the_sandbox_and_matches_replay(fix_dir) -> None:  # type: ignore[no-untyped-def]
    policy = tiny_random_model(seed=0)
    cfg = RolloutConfig(max_turns=1, max_tokens_per_turn=6, workers=1)
    expert = oracle_expert(fix_dir)
    expert.states = ExpertStates.record(
        policy, fix_dir, expert, agent_config(cfg, max_turns=expert.turns)
    )
    try:
        assert sorted(expert.states.snapshots) == [1, 2, 3]
        ids = []  # forks of one recorded replay are episodes of their own
        for start, solved in ((1, False), (2, True)):
            forked = resumed_episode(policy, fix_dir, start, cfg, seed=5, expert=expert)
            replayed = resumed_episode(policy, fix_dir, start, cfg, seed=5)
            assert (forked.init, replayed.init) == ("fork", "replay")
            # The expert's mkdir (turn 1) is in the forked sandbox: the task passes from turn 2.
            assert forked.passed == replayed.passed == solved
            a, b = (
                [
                    (s.message, s.metrics.completion_token_ids)
                    for s in e.trajectory.steps
                    if s.metrics
                ]
                for e in (forked, replayed)
            )
            assert a == b and len(a) == start + 1
            ids.append(forked.trajectory.session_id)
        assert len(set(ids)) == 2
        # A snapshot that is gone falls back to replay.
        expert.states.snapshots.pop(1).remove()
        assert resumed_episode(policy, fix_dir, 1, cfg, seed=5, expert=expert).init == "replay"
    finally:
        expert.states.close()
    assert not expert.states.snapshots


def test_training_resamples_hard_tasks_and_imitates_a_stuck_fork(
    base_image: str, tmp_path: Path
) -> None:
    before = set(snapshots_dir().iterdir())
    cfg = parse_config(
        {
            "model": "local:tiny-random",
            "tasks": "term:fix-dir?seed=0&size=1",
            "steps": 1,
            "lr": 1e-3,
            "rollout": {
                "group_size": 8,
                "tasks_per_step": 1,
                "max_turns": 1,
                "max_tokens_per_turn": 6,
                "workers": 2,
            },
            "resample": {"enabled": True, "anchors": 4, "window": 2, "il_coef": 0.5},
            "out": str(tmp_path / "run"),
            "tensorboard": False,
        }
    )
    trainer = Trainer(cfg)
    trainer.run()
    [metrics] = [json.loads(line) for line in (cfg.out / "metrics.jsonl").open()]
    # A random model never fixes the task itself; from after the expert's fix it passes.
    assert metrics["resampled_episodes"] == 6 and metrics["forked_starts"] == 6
    assert metrics["start_success"] == 0 and metrics["resampled_success"] > 0
    assert metrics["crucial_forks"] == 1 and metrics["il_sequences"] == 1
    assert metrics["il_loss"] > 0
    assert (cfg.out / "experts.jsonl").exists()
    assert set(snapshots_dir().iterdir()) == before  # every snapshot removed
    assert not (cfg.out / "snapshots.txt").exists()


def test_a_teacher_source_needs_a_teacher() -> None:
    with pytest.raises(ConfigError, match=r"resample\.teacher"):
        parse_config({"model": "local:x", "tasks": "t", "resample": {"sources": ["teacher"]}})


def test_a_teachers_verified_successes_become_experts(fix_dir) -> None:  # type: ignore[no-untyped-def]
    policy = tiny_random_model(seed=0)
    cfg = RolloutConfig(max_turns=4, max_tokens_per_turn=6, workers=1)
    oracle = oracle_expert(fix_dir)
    good = ForcedModel(policy, oracle.replies)
    [expert] = teacher_experts(good, [fix_dir], cfg)  # type: ignore[arg-type]
    assert (expert.source, expert.task_id, expert.replies) == (
        "teacher",
        fix_dir.id,
        oracle.replies,
    )
    wrong = ForcedModel(policy, ["```bash\ntrue\n```", "```bash\nsubmit\n```"])
    assert teacher_experts(wrong, [fix_dir], cfg) == []  # type: ignore[arg-type]
