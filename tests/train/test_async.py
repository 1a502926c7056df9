"""Asynchronous rollouts with the tiny random model in real sandboxes: versions, the staleness
bound, pi_old from mu, a worker that dies mid-episode, and shutdown."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

import torch

from rockroll.errors import ConfigError
from rockroll.models.local import tiny_random_model
from rockroll.models.messages import Message
from rockroll.sandbox.cgroups import CgroupSet
from rockroll.sandbox.runtime import local_runtime
from rockroll.train import episodes
from rockroll.train.chunks import ChunkedSequence
from rockroll.train.config import parse_config
from rockroll.train.rollouts import Rollouts
from rockroll.train.rollouts.asynchronous import AsyncRollouts
from rockroll.train.trainer import Trainer
from rockroll.train.update import Tokens, rl_loss

CONFIG = {
    "model": "local:tiny-random",
    "tasks": "term:count-lines?seed=0&size=8",
    "steps": 3,
    "lr": 1e-3,
    "rollout": {
        "group_size": 2,
        "tasks_per_step": 2,
        "max_turns": 2,
        "max_tokens_per_turn": 8,
        "workers": 4,
        "mode": "async",
    },
    "asynchronous": {"max_staleness": 1},
    "checkpoint_every": 100,
    "tensorboard": False,
}
CHAT = [Message(role="user", content="Say something.")]


def _config(tmp_path: Path, **changes: dict) -> dict:
    cfg = {**CONFIG, "out": str(tmp_path / "run")}
    for key, value in changes.items():
        cfg[key] = {**cfg[key], **value} if isinstance(cfg.get(key), dict) else value
    return cfg


def _rollout_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("rockroll-rollout")]


@pytest.fixture
def clean() -> Iterator[None]:
    """Every test here must leave no rollout thread and no sandbox of its own behind."""
    before = set(local_runtime()._owned)
    yield
    assert not _rollout_threads()
    assert set(local_runtime()._owned) <= before, "a sandbox was left open"


# -- the pieces ---------------------------------------------------------------------------------
class _WatchedLock:
    """A lock that tells when another thread starts waiting for it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.waiting = threading.Event()

    def __enter__(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            self.waiting.set()
        self.lock.acquire()

    def __exit__(self, *exc: object) -> None:
        self.lock.release()


def test_completions_report_the_weights_version_and_wait_for_the_weights_lock() -> None:
    policy = tiny_random_model(seed=3)
    assert policy.complete(CHAT, None, max_tokens=4).weights_version == 0
    watched = _WatchedLock()
    policy.weights_lock = watched  # type: ignore[assignment]
    updated = threading.Event()
    forwards: list[bool] = []  # per forward pass of the model: had the update finished?
    policy.model.register_forward_pre_hook(lambda *_: forwards.append(updated.is_set()))
    done: list[int | None] = []
    with policy.weights_lock:  # an update in progress
        worker = threading.Thread(
            target=lambda: done.append(policy.complete(CHAT, None, max_tokens=4).weights_version)
        )
        worker.start()
        assert watched.waiting.wait(10), "the batch never asked for the weights lock"
        policy.weights_version = 1
        updated.set()
    worker.join(10)
    assert done == [1]
    assert forwards and all(forwards), "a batch decoded while the weights were changing"


def _tokens(old_is_mu: bool) -> Tokens:
    """A failed and a successful episode of one group, two turns each."""
    seqs = [
        ChunkedSequence(
            input_ids=[1, 2, 3, 4, 5],
            response_mask=[0, 1, 1, 0, 1],
            chunk_ids=[-1, 0, 0, -1, 1],
            mu_logprobs=[0.0, -3.0, -3.2, 0.0, -0.7],
            reward=reward,
            num_chunks=2,
            old_is_mu=old_is_mu,
        )
        for reward in (0.0, 1.0)
    ]
    return Tokens.of(seqs, [0, 0])


@pytest.mark.parametrize("algorithm", ["ipa", "topr", "grpo"])
def test_pi_old_is_mu_where_the_weights_are_gone_and_the_mismatch_mask_is_skipped(
    algorithm: str,
) -> None:
    cfg = parse_config({**CONFIG, "algorithm": algorithm, "out": "unused"})
    logp = torch.tensor([-0.9, -1.1, -0.8] * 2)
    recomputed = torch.tensor([-0.5, -0.6, -0.5] * 2)  # far above mu: chunk 0 fails the masks
    stale = _tokens(old_is_mu=True)
    loss, stats = rl_loss(cfg, logp, recomputed, stale)
    same, same_stats = rl_loss(cfg, logp, stale.mu.clone(), _tokens(old_is_mu=False))
    assert torch.equal(loss, same) and stats == same_stats  # recomputed old is ignored
    fresh, fresh_stats = rl_loss(cfg, logp, recomputed, _tokens(old_is_mu=False))
    assert not torch.equal(fresh, loss)
    if algorithm == "ipa":
        assert stats["masked_chunk_fraction"] == 0.0
        assert fresh_stats["masked_chunk_fraction"] == 0.5


# -- runs ---------------------------------------------------------------------------------------
@pytest.mark.timeout(120)
def test_an_async_run_records_versions_and_metrics(
    base_image: str, tmp_path: Path, clean: None
) -> None:
    t = Trainer(parse_config(_config(tmp_path)))
    t.run()
    rows = [json.loads(line) for line in (t.cfg.out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "step" in r]
    assert [r["step"] for r in steps] == [1, 2, 3]
    for r in steps:
        for key in ("staleness_mean", "staleness_max", "stale_dropped", "worker_deaths", "loss"):
            assert key in r, key
        assert r["episodes"] == 4 and r["staleness_max"] <= 1
    assert [r["version"] for r in steps] == [0, 1, 2]  # versions before each step's update
    assert (t.cfg.out / "checkpoints" / "latest").read_text().strip() == "step-000003"


@pytest.mark.timeout(120)
def test_steps_take_episodes_within_the_bound_and_mu_stands_in_for_gone_weights(
    base_image: str, tmp_path: Path, clean: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    t = Trainer(parse_config(_config(tmp_path, asynchronous={"max_staleness": 0})))
    assert isinstance(t.rollouts, AsyncRollouts) and isinstance(t.rollouts, Rollouts)
    seen: list[list[ChunkedSequence]] = []
    step = t.learner.step

    def spy(seqs: list[ChunkedSequence], groups: list[int], imitations: list) -> dict:
        seen.append(seqs)
        return step(seqs, groups, imitations)

    monkeypatch.setattr(t.learner, "step", spy)
    try:
        for _ in range(3):
            t.train_step()
            t.step += 1
            source = t.rollouts
            assert source is not None
            at = source.version - 1  # the version the step took its episodes at
            for r in source.taken:
                assert r.first <= r.last <= at
                assert at - r.first <= 0  # k = 0: only episodes of the current weights
            assert not any(s.old_is_mu for s in seen[-1])
    finally:
        t.close()


@pytest.mark.slow
@pytest.mark.timeout(180)
@pytest.mark.parametrize("stale", ["drop", "keep"])
def test_long_episodes_past_the_bound_are_dropped_or_kept_with_mu(
    base_image: str, tmp_path: Path, clean: None, stale: str
) -> None:
    """Slow episodes (fix-slow) span updates; more are in flight than a step takes."""
    cfg = _config(
        tmp_path,
        tasks="term:fix-slow?seed=0&size=16",
        steps=6,
        rollout={"tasks_per_step": 1, "max_turns": 1, "workers": 6},
        asynchronous={"max_staleness": 0, "stale": stale},
    )
    t = Trainer(parse_config(cfg))
    metrics: list[dict] = []
    t.run(on_step=metrics.append)
    assert len(metrics) == 6
    if stale == "drop":
        assert all(m["staleness_max"] == 0 and m["pi_old_mu_fraction"] == 0 for m in metrics)
        assert sum(m["stale_dropped"] for m in metrics) > 0
    else:
        assert max(m["staleness_max"] for m in metrics) > 0
        assert sum(m["stale_dropped"] for m in metrics) == 0
        assert max(m["pi_old_mu_fraction"] for m in metrics) > 0


@pytest.mark.timeout(120)
@pytest.mark.parametrize("how", ["exception", "sandbox-killed"])
def test_an_episode_whose_worker_dies_is_resampled_and_training_goes_on(
    base_image: str, tmp_path: Path, clean: None, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    real = episodes.verify
    died: list[str] = []

    def dies_once(task, sandbox):  # type: ignore[no-untyped-def]
        if not died:  # mid-episode: its turns are done, its sandbox is open
            died.append(task.id)
            if how == "exception":
                raise RuntimeError("the worker died")
            CgroupSet.attach(sandbox._rec.cgroup).kill_all()  # every process of the sandbox
            sandbox.exec(["true"])  # what the verifier's first command meets
        return real(task, sandbox)

    monkeypatch.setattr(episodes, "verify", dies_once)
    cfg = _config(tmp_path, steps=2, asynchronous={"stale": "keep"})
    metrics: list[dict] = []
    Trainer(parse_config(cfg)).run(on_step=metrics.append)
    assert died and len(metrics) == 2
    assert all(m["episodes"] == 4 and m["dropped"] == 0 for m in metrics)  # resampled
    deaths = sum(m["worker_deaths"] for m in metrics)
    retries = sum(m["infra_retries"] for m in metrics)
    assert (deaths, retries) == ((1, 0) if how == "exception" else (0, 1))


@pytest.mark.timeout(120)
def test_an_error_in_the_update_stops_the_workers_and_closes_their_sandboxes(
    base_image: str, tmp_path: Path, clean: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    t = Trainer(parse_config(_config(tmp_path, steps=5)))

    def broken(seqs: list[ChunkedSequence], groups: list[int], imitations: list) -> dict:
        raise ValueError("the update failed")

    monkeypatch.setattr(t.learner, "step", broken)
    started = time.monotonic()
    with pytest.raises(ValueError, match="the update failed"):
        t.run()
    assert time.monotonic() - started < 60
    assert t.rollouts is None


def test_synchronous_is_the_default() -> None:
    rollout = {k: v for k, v in CONFIG["rollout"].items() if k != "mode"}  # type: ignore[attr-defined]
    cfg = parse_config(
        {k: v for k, v in CONFIG.items() if k != "asynchronous"} | {"rollout": rollout}
    )
    assert cfg.rollout.mode == "sync"
    assert cfg.asynchronous.stale == "drop"


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ({"asynchronous": {"enabled": True}}, "rollout.mode: async"),
        ({"asynchronous": {"enabled": False, "max_staleness": 1}}, "rollout.mode: sync"),
        ({"distributed": "ray"}, "rollout.mode: ray"),
        ({"distributed": "none"}, "rollout.mode: sync"),
    ],
)
def test_the_old_mode_switches_are_refused_naming_the_new_key(old: dict, new: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"model": "local:tiny-random", "tasks": "x"} | old)
    message = str(caught.value)
    assert new in message and "\n" not in message, message
