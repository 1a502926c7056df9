"""The README's claims about training runs, checked on a tiny random model in real sandboxes.

- a run killed with `kill -9` in the middle of a step loses that step only: `--resume`
  continues from the last completed step's checkpoint (its weights, optimizer, step counter),
  and `metrics.jsonl` has every step once;
- metrics per step go to TensorBoard: an events file a TensorBoard reader parses, with the
  scalars the README names at the steps they belong to.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from rockroll.cli import main
from rockroll.train.config import load_config, parse_config
from rockroll.train.trainer import Trainer

PAUSE = "0.737"  # the verifier sleeps this long: a number no other test sleeps for


def _task_folder(root: Path) -> Path:
    """Two Harbor tasks whose verifier takes a while, so that a step is long enough to be
    killed in the middle of (its episodes wait for `sleep PAUSE`)."""
    for name in ("a", "b"):
        task = root / name
        (task / "tests").mkdir(parents=True)
        (task / "instruction.md").write_text("Write ok to /tmp/out.\n")
        (task / "task.toml").write_text("[verifier]\ntimeout_sec = 60\n")
        (task / "tests" / "test.sh").write_text(
            textwrap.dedent(
                f"""\
                sleep {PAUSE}
                if grep -q ok /tmp/out 2>/dev/null; then echo 1; else echo 0; fi \\
                    > /logs/verifier/reward.txt
                """
            )
        )
    return root


def _config(tmp_path: Path, name: str, **changes: object) -> Path:
    config = {
        "model": "local:tiny-random",
        "tasks": str(_task_folder(tmp_path / f"{name}-tasks")),
        "steps": 4,
        "lr": 1e-3,
        "rollout": {
            "group_size": 2,
            "tasks_per_step": 1,
            "max_turns": 1,
            "max_tokens_per_turn": 8,
            "workers": 2,
        },
        "checkpoint_every": 1,
        "tensorboard": False,
        "out": str(tmp_path / name),
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config | changes))
    return path


def _sleeping() -> bool:
    """Whether a verifier is at work: sandbox processes are visible from the host."""
    for proc in Path("/proc").iterdir():
        try:
            if (
                proc.name.isdigit()
                and (proc / "cmdline").read_bytes() == f"sleep\0{PAUSE}\0".encode()
            ):
                return True
        except OSError:
            continue
    return False


def _latest(run: Path) -> str | None:
    pointer = run / "checkpoints" / "latest"
    return pointer.read_text().strip() if pointer.is_file() else None


def _step_rows(run: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if "step" in r]


def _kill_mid_step(cfg: Path, run: Path, *, checkpoint: str, rows: int) -> None:
    """Start `rockroll train`, wait until `checkpoint` is the latest and `rows` steps are in
    metrics.jsonl and the next step's episodes are being verified, then SIGKILL it."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "rockroll", "train", str(cfg)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=os.environ,
    )
    deadline = time.monotonic() + 240
    try:
        while not (
            _latest(run) == checkpoint
            and (run / "metrics.jsonl").is_file()
            and len(_step_rows(run)) == rows
            and _sleeping()
        ):
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "the run never reached the point to kill it at"
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL


def test_a_kill_in_the_middle_of_a_step_loses_that_step_only(
    base_image: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = _config(tmp_path, "run", steps=3)
    run = tmp_path / "run"
    _kill_mid_step(cfg, run, checkpoint="step-000002", rows=2)  # killed during step 3

    # What the crash left: steps 1 and 2, whole; nothing of step 3.
    assert _latest(run) == "step-000002"
    before = _step_rows(run)
    assert [r["step"] for r in before] == [1, 2]
    saved = load_file(run / "checkpoints" / "step-000002" / "model.safetensors")

    # Resuming restores the checkpoint exactly: weights, optimizer, step counter.
    step_1 = load_file(run / "checkpoints" / "step-000001" / "model.safetensors")
    assert any(not torch.equal(saved[k], step_1[k]) for k in saved), "step 2 moved nothing"
    at_checkpoint = Trainer(load_config(cfg, {"steps": 2}))  # resume, then nothing left to do
    at_checkpoint.run(resume=True)
    assert at_checkpoint.step == 2
    weights = at_checkpoint.learner.model.state_dict()
    assert set(saved) <= set(weights)  # tied embeddings are saved once
    for key in saved:
        assert torch.equal(weights[key], saved[key]), key
    adam_steps = {
        float(s["step"]) for s in at_checkpoint.learner.optimizer.state_dict()["state"].values()
    }
    assert adam_steps == {2.0}
    assert [r["step"] for r in _step_rows(run)] == [1, 2]  # a resume with no steps adds none

    # `rockroll train --resume` goes on with step 3: each step once, only step 3's work was lost.
    capsys.readouterr()
    assert main(["train", str(cfg), "--resume"]) == 0
    said = "".join(capsys.readouterr().err.split())  # rich wraps lines; compare unwrapped
    assert f"resumedfrom{run / 'checkpoints' / 'step-000002'}atstep2" in said, said
    after = _step_rows(run)
    assert [r["step"] for r in after] == [1, 2, 3]
    assert after[:2] == before  # the completed steps' rows were kept as they were
    assert _latest(run) == "step-000003"


def test_a_resumed_run_has_one_metrics_row_per_step(base_image: str, tmp_path: Path) -> None:
    cfg = _config(tmp_path, "run", checkpoint_every=2)
    run = tmp_path / "run"
    _kill_mid_step(cfg, run, checkpoint="step-000002", rows=3)  # killed during step 4
    assert [r["step"] for r in _step_rows(run)] == [1, 2, 3]
    assert main(["train", str(cfg), "--resume"]) == 0
    assert [r["step"] for r in _step_rows(run)] == [1, 2, 3, 4]
    # Step 3 ran twice (it was not checkpointed): its first row is kept aside, not lost.
    superseded = [json.loads(line) for line in (run / "metrics.superseded.jsonl").open()]
    assert [r["step"] for r in superseded] == [3]


# The scalars the README names: "reward, success, chunk ratios, masked fraction, grad norm,
# tokens/s, rollout/train time"; and the loss.
README_SCALARS = (
    "reward",
    "success",
    "chunk_ratio_mean",
    "masked_chunk_fraction",
    "grad_norm",
    "gen_tokens_per_s",
    "train_tokens_per_s",
    "rollout_seconds",
    "train_seconds",
    "loss",
)


def test_tensorboard_events_hold_the_step_metrics(base_image: str, tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = parse_config(
        {
            "model": "local:tiny-random",
            "tasks": "rg:basic_arithmetic?seed=0&size=4",
            "steps": 2,
            "lr": 1e-3,
            "rollout": {
                "group_size": 2,
                "tasks_per_step": 2,
                "max_turns": 1,
                "max_tokens_per_turn": 8,
                "workers": 2,
            },
            "out": str(tmp_path / "run"),
        }
    )
    assert cfg.tensorboard  # on by default
    Trainer(cfg).run()
    rows = {r["step"]: r for r in _step_rows(cfg.out)}
    assert sorted(rows) == [1, 2]

    files = list((cfg.out / "tensorboard").glob("events.out.tfevents.*"))
    assert len(files) == 1, files
    events = EventAccumulator(str(files[0]), size_guidance={"scalars": 0})
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert set(README_SCALARS) <= tags, sorted(tags)
    numeric = {k for k, v in rows[1].items() if isinstance(v, int | float)} - {"step", "time"}
    assert tags == numeric, "every number of a step's row goes to TensorBoard, and only those"
    for tag in tags:
        scalars = events.Scalars(tag)
        assert [s.step for s in scalars] == [1, 2], tag
        for s in scalars:  # stored as float32
            assert s.value == pytest.approx(rows[s.step][tag], rel=1e-6, abs=1e-30), tag
