"""The demo pipeline end to end on a tiny random model: evaluate, SFT, IPA, evaluate again."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from rich.console import Console

from rockroll.demo import DEMO_CONFIG, run_pipeline


@pytest.mark.slow
def test_the_demo_pipeline_runs_end_to_end(base_image: str, tmp_path: Path) -> None:
    console = Console(record=True, width=200)
    families = "note-mkdir,count-lines"
    code = run_pipeline(
        console,
        out=str(tmp_path / "demo"),
        steps=2,
        model="local:tiny-random",
        tasks=f"term:{families}?seed=0&size=2",
        eval_tasks=f"term:{families}?seed=1000&size=1",
        rollout=DEMO_CONFIG["rollout"] | {"group_size": 2, "max_tokens_per_turn": 8},
        sft={"steps": 1, "batch_size": 2},
        tensorboard=False,
    )
    text = console.export_text()
    assert code == 0
    assert "SFT: 4/4 expert episodes verified" in text  # every expert trajectory passes
    assert "held-out success" in text
    assert "start" in text and "after SFT" in text and "step 2" in text
    assert (tmp_path / "demo" / "checkpoints" / "step-000002" / "model.safetensors").is_file()
