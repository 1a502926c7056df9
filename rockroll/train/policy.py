"""The policy as training loads it, written once: the weights, and the copy it decodes with.

The learner and every Ray rollout worker load the policy here, so they decode alike: with
`rollout.decode_dtype` resolved to bfloat16, generation runs on a bfloat16 copy of the weights
(synced after every update), with grouped eager attention on CPU (it decodes one token faster
than SDPA there) and the model's own attention on CUDA (where SDPA wins).
"""

from __future__ import annotations

from pathlib import Path

import torch

from rockroll.models.attention import NAME as GROUPED
from rockroll.models.local import LocalModel, load_local
from rockroll.train.config import TrainConfig


def load_policy(cfg: TrainConfig, device: str | None = None) -> LocalModel:
    """The configured policy on `device` (default: the config's), ready to decode."""
    policy = load_local(
        cfg.model.removeprefix("local:"), dtype=cfg.dtype, device=device or cfg.device
    )
    prepare_decoding(policy, cfg.rollout.decode_dtype)
    return policy


def prepare_decoding(policy: LocalModel, setting: str) -> None:
    """Give `policy` a bfloat16 decoding copy where `setting` resolves to bfloat16."""
    device = next(policy.model.parameters()).device
    if decode_dtype(setting, device) == "bfloat16":
        policy.use_decode_copy(torch.bfloat16, attention=GROUPED if device.type == "cpu" else None)


def decode_dtype(setting: str, device: torch.device) -> str:
    """`rollout.decode_dtype` resolved: "auto" is bfloat16 where the hardware computes in it
    natively (CUDA with bf16, or a CPU with AMX or AVX512-BF16), else float32."""
    if setting != "auto":
        return setting
    if device.type == "cuda":
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float32"
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    return "bfloat16" if ("amx_bf16" in flags or "avx512_bf16" in flags) else "float32"
