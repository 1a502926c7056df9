"""Checkpoints that resume a run exactly: weights, optimizer, RNG states, step, data position.

Each checkpoint is written to a temporary folder and renamed into place, then `latest` is
replaced atomically, so a crash at any moment leaves the previous checkpoint whole. Weights
are safetensors; the rest is a torch pickle of plain tensors and numbers.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model, save_model

KEEP = 2  # checkpoints kept; older ones are removed after a newer one is complete


def save(folder: Path, step: int, model: Any, optimizer: Any, state: dict) -> Path:
    """Write checkpoint `step` under `folder/checkpoints/`; `state` is JSON-able run state."""
    root = folder / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:06d}"
    tmp = root / f".step-{step:06d}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_model(model, str(tmp / "model.safetensors"))
    torch.save({"optimizer": optimizer.state_dict(), "rng": _rng_state()}, tmp / "trainer.pt")
    (tmp / "state.json").write_text(json.dumps({"step": step, **state}, indent=1))
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    pointer = root / "latest.tmp"
    pointer.write_text(final.name)
    os.replace(pointer, root / "latest")
    for old in sorted(root.glob("step-*"))[:-KEEP]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest(folder: Path) -> Path | None:
    pointer = folder / "checkpoints" / "latest"
    if not pointer.is_file():
        return None
    path = folder / "checkpoints" / pointer.read_text().strip()
    return path if (path / "state.json").is_file() else None


def load(path: Path, model: Any, optimizer: Any) -> dict:
    """Restore weights, optimizer and RNG states; returns the run state saved with them."""
    load_model(model, str(path / "model.safetensors"))
    saved = torch.load(path / "trainer.pt", weights_only=False)
    optimizer.load_state_dict(saved["optimizer"])
    _set_rng_state(saved["rng"])
    return json.loads((path / "state.json").read_text())


def _rng_state() -> dict:
    state: dict[str, Any] = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
