"""The training loop on a tiny random model in real sandboxes: steps, checkpoints, resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

import torch
import yaml
from safetensors.torch import load_file

from rockroll.cli import main
from rockroll.errors import ConfigError
from rockroll.tasks.schema import Task, Verifier
from rockroll.train import sampler as sampler_module
from rockroll.train.config import load_config, parse_config
from rockroll.train.episodes import Job, collect, sequences_of
from rockroll.train.rollouts import Rollouts
from rockroll.train.rollouts.sync import SyncRollouts
from rockroll.train.trainer import Trainer

CONFIG = {
    "model": "local:tiny-random",
    "tasks": "rg:basic_arithmetic?seed=0&size=6",
    "steps": 4,
    "lr": 1e-3,
    "rollout": {
        "group_size": 2,
        "tasks_per_step": 2,
        "max_turns": 2,
        "max_tokens_per_turn": 8,
        "workers": 1,
    },
    "tensorboard": False,
}


def _config(tmp_path: Path, name: str, **changes: object) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(CONFIG | {"out": str(tmp_path / name)} | changes))
    return path


def _weights(run: Path) -> dict[str, torch.Tensor]:
    latest = (run / "checkpoints" / "latest").read_text().strip()
    return load_file(run / "checkpoints" / latest / "model.safetensors")


@pytest.mark.slow
def test_a_killed_run_resumes_to_the_same_parameters(base_image: str, tmp_path: Path) -> None:
    whole = load_config(_config(tmp_path, "whole"))
    Trainer(whole).run()
    expected = _weights(whole.out)
    start = Trainer(whole).learner.model.state_dict()  # the untrained weights
    assert any(not torch.equal(expected[k], start[k]) for k in expected), "training moved nothing"

    cfg = _config(tmp_path, "killed")
    run = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, "-m", "rockroll.cli", "train", str(cfg)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=os.environ,
    )
    deadline = time.monotonic() + 120
    while not (run / "checkpoints" / "step-000001").is_dir():
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = (run / "checkpoints" / "latest").read_text().strip()
    print(f"killed with {killed_at} as the latest checkpoint")
    assert main(["train", str(cfg), "--resume"]) == 0
    got = _weights(run)
    assert got.keys() == expected.keys()
    for key in expected:
        assert torch.equal(got[key], expected[key]), key
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in rows if "step" in r]
    # Every step is logged (a step the kill cut short after its line, twice), ending with 4.
    assert set(steps) == {1, 2, 3, 4} and steps[-1] == 4, steps


@pytest.mark.slow
def test_old_logprobs_are_recomputed_and_the_first_ratio_is_exactly_one(
    base_image: str, tmp_path: Path
) -> None:
    t = Trainer(parse_config(CONFIG | {"out": str(tmp_path / "r")}))
    jobs = [Job(task, i) for i, task in enumerate(t.tasks[:2])]
    seqs, groups = sequences_of(collect(t.policy, jobs, t.cfg.rollout), 1, t.learner.version)
    first = t.learner.step(seqs, groups)
    second = t.learner.step(seqs, groups)  # the same data, one update later: pi_old has moved
    assert first["chunk_ratio_mean"] == 1.0 and second["chunk_ratio_mean"] == 1.0
    assert abs(first["mismatch_mean"] - 1.0) < 1e-3  # pi_old == mu before any update
    assert abs(second["mismatch_mean"] - 1.0) > 1e-3  # recomputed with the new weights


def test_bad_configs_name_the_key_and_the_type(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown key 'rollout.grup_size'"):
        parse_config(CONFIG | {"rollout": {"grup_size": 2}})
    with pytest.raises(ConfigError, match=r"'steps'.*integer.*'many'"):
        parse_config(CONFIG | {"steps": "many"})
    with pytest.raises(ConfigError, match=r"'algorithm'.*'ipa', 'grpo' or 'topr'"):
        parse_config(CONFIG | {"algorithm": "dpo"})
    with pytest.raises(ConfigError, match=r"'model' is required"):
        parse_config({"tasks": "x"})
    bad = tmp_path / "bad.yaml"
    bad.write_text("steps: [1\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_tasks_without_a_verifier_are_refused_before_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blind = Task(id="t/1", source="test", instruction="x", verifier=Verifier(kind="script"))
    monkeypatch.setattr(sampler_module, "load_suite", lambda spec: [blind])
    with pytest.raises(ConfigError, match="t/1 has no verifier"):
        Trainer(parse_config(CONFIG | {"out": str(tmp_path / "r")}))
    assert not (tmp_path / "r").exists()  # refused before anything was made


def test_cli_reports_config_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _config(tmp_path, "typo", stepz=3)
    assert main(["train", str(cfg)]) == 1
    assert "unknown key 'stepz'" in capsys.readouterr().err


def test_micro_batch_size_defaults_by_device_and_is_validated() -> None:
    from rockroll.train.learner import micro_tokens

    assert micro_tokens(None, torch.device("cpu")) == 2048
    assert micro_tokens(None, torch.device("cuda")) == 8192
    assert micro_tokens(512, torch.device("cuda")) == 512
    assert parse_config(CONFIG | {"micro_tokens": 4096}).micro_tokens == 4096
    with pytest.raises(ConfigError, match="micro_tokens"):
        parse_config(CONFIG | {"micro_tokens": 8})


@pytest.mark.slow
def test_a_step_reports_where_its_time_went_and_counts_a_version(
    base_image: str, tmp_path: Path
) -> None:
    t = Trainer(parse_config(CONFIG | {"out": str(tmp_path / "r")}))
    try:
        assert isinstance(t.rollouts, SyncRollouts) and isinstance(t.rollouts, Rollouts)
        assert t.learner.version == 0
        metrics = t.train_step()
        assert t.learner.version == t.policy.weights_version == 1
        phases = metrics["update_seconds"]
        assert {"pi_old", "gradient", "optimizer", "decode_sync"} <= set(phases)
        assert 0 < sum(phases.values()) <= metrics["train_seconds"]
        episode = metrics["episode_seconds"]
        assert {"total", "sandbox", "model", "loop", "verify"} == set(episode)
        assert episode["model"] <= episode["loop"] <= episode["total"]
        assert episode["sandbox"] > 0 and episode["verify"] > 0
    finally:
        t.close()
    assert t.rollouts is None
    with pytest.raises(RuntimeError, match="closed"):
        t.train_step()
