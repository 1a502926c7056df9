"""The demo pipeline end to end on a tiny random model: evaluate, SFT, IPA, evaluate again."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

import torch
from rich.console import Console
from safetensors.torch import load_file

from rockroll.demo import DEMO_CONFIG, run_pipeline
from rockroll.models.local import tiny_random_model

FAMILIES = ["count-lines", "note-mkdir"]
GROUP, TASKS_PER_STEP, MAX_TURNS, MAX_TOKENS = 2, 2, 3, 8


def _row(text: str, first: str) -> list[str]:
    """The cells of the printed table's row whose first cell is `first`."""
    for line in text.splitlines():
        line = line.replace("┃", "│").strip().strip("│")  # the header row has heavy borders
        cells = [c.strip() for c in line.split("│")]
        if cells[0] == first:
            return cells[1:]
    raise AssertionError(f"no table row {first!r} in:\n{text}")


@pytest.mark.slow
def test_the_demo_pipeline_runs_end_to_end(base_image: str, tmp_path: Path) -> None:
    console = Console(record=True, width=200)
    out = tmp_path / "demo"
    families = ",".join(FAMILIES)
    code = run_pipeline(
        console,
        out=str(out),
        steps=2,
        model="local:tiny-random",
        tasks=f"term:{families}?seed=0&size=2",
        eval_tasks=f"term:{families}?seed=1000&size=1",
        rollout=DEMO_CONFIG["rollout"]
        | {"group_size": GROUP, "tasks_per_step": TASKS_PER_STEP, "max_turns": MAX_TURNS}
        | {"max_tokens_per_turn": MAX_TOKENS},
        sft={"steps": 1, "batch_size": 2},
        tensorboard=False,
    )
    text = console.export_text()
    assert code == 0
    assert "SFT: 4/4 expert episodes verified" in text  # every expert trajectory passes

    # metrics.jsonl: evaluate, one SFT step, evaluate, then two IPA steps and a last evaluation.
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    kinds = ["eval" if "eval_label" in r else "sft" if "sft_step" in r else "step" for r in rows]
    assert kinds == ["eval", "sft", "eval", "step", "eval", "step"], rows
    evals = [r for r in rows if "eval_label" in r]
    assert [(r["eval_label"], r["eval_step"]) for r in evals] == [
        ("start", 0),
        ("after SFT", 0),
        ("", 2),
    ]
    for r in evals:  # one held-out instance per family; success is the share that passed
        assert sorted(r["eval"]) == FAMILIES and all(total == 1 for _, total in r["eval"].values())
        assert r["eval_success"] == sum(p for p, _ in r["eval"].values()) / len(FAMILIES)
    [sft] = [r for r in rows if "sft_step" in r]
    # Cross-entropy of a near-uniform random model over SmolLM2's 49152-token vocabulary.
    assert sft["sft_step"] == 1 and abs(sft["sft_loss"] - math.log(49152)) < 1.0, sft
    steps = [r for r in rows if "step" in r]
    assert [r["step"] for r in steps] == [1, 2]
    for r in steps:
        assert r["episodes"] == r["sequences"] == GROUP * TASKS_PER_STEP, r
        assert r["dropped"] == 0 and 1 <= r["turns"] <= MAX_TURNS
        assert 0 < r["generated_tokens"] <= r["episodes"] * MAX_TURNS * MAX_TOKENS
        assert r["reward"] == r["success"] and 0 <= r["success"] <= 1  # pass/fail tasks
        assert math.isfinite(r["loss"]) and r["loss"] != 0 and r["grad_norm"] > 0, r
        assert 0 <= r["masked_chunk_fraction"] <= 1
    assert steps[-1]["eval_success"] == evals[-1]["eval_success"]

    # The printed table is those evaluations: one column each, a row per family, then "all".
    assert _row(text, "family") == ["start", "after SFT", "step 2"]
    for family in FAMILIES:
        assert _row(text, family) == [f"{r['eval'][family][0]}/1" for r in evals]
    assert _row(text, "all") == [f"{r['eval_success']:.0%}" for r in evals]

    # The last checkpoint: step 2, the data position after 2 x 2 tasks, and trained weights.
    checkpoint = out / "checkpoints" / "step-000002"
    assert (out / "checkpoints" / "latest").read_text().strip() == "step-000002"
    state = json.loads((checkpoint / "state.json").read_text())
    assert state["step"] == 2 and state["sampler"] == {"epoch": 0, "index": 4}
    assert [e["per_family"] for e in state["evals"]] == [r["eval"] for r in evals]
    trained = load_file(checkpoint / "model.safetensors")
    start = tiny_random_model().model.state_dict()  # what local:tiny-random starts from
    assert trained and set(trained) <= set(start)
    assert all(torch.isfinite(w).all() for w in trained.values())
    moved = [k for k in trained if not torch.equal(trained[k], start[k])]
    assert len(moved) == len(trained), set(trained) - set(moved)  # SFT and IPA moved every one
