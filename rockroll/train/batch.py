"""Chunked sequences as one batch of tensors, padded or packed.

Per-token tensors are aligned with `input_ids`: the logprob of token t comes from the logits at
t - 1. A sequence always starts with prompt tokens, so that shift never puts loss on a token of
another packed sequence.

- "pad": shape [B, T], padded on the right; `attention_mask` marks real tokens.
- "pack": shape [1, N], the sequences back to back with no padding; `position_ids` restart at 0
  for each one, which is how transformers and flash-attention's varlen kernels keep packed
  sequences from attending to each other, so `attention_mask` is None (see `model_inputs`).

`seq_index` names the sequence of every token (-1 on padding); `rewards`, `success` and
`num_chunks` are per sequence, in the order given.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch.nn.utils.rnn import pad_sequence

from rockroll.train.chunks import NOT_GENERATED, ChunkedSequence

Mode = Literal["pad", "pack"]


@dataclass
class Batch:
    """Collated sequences: per-token tensors of one shape, then `rewards`, `success` (passed)
    and `num_chunks` per sequence."""

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    attention_mask: torch.Tensor | None
    seq_index: torch.Tensor
    response_mask: torch.Tensor
    chunk_ids: torch.Tensor
    mu_logprobs: torch.Tensor
    rewards: torch.Tensor
    success: torch.Tensor
    num_chunks: torch.Tensor

    def model_inputs(self) -> dict[str, Any]:
        """Keyword arguments for a transformers causal LM's forward. No KV cache: training needs
        none, and transformers only detects packed sequences when there is none."""
        inputs = {
            "input_ids": self.input_ids,
            "position_ids": self.position_ids,
            "use_cache": False,
        }
        if self.attention_mask is not None:
            inputs["attention_mask"] = self.attention_mask
        return inputs

    def to(self, device: torch.device | str) -> Batch:
        """The same batch on `device`."""
        moved = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            moved[f.name] = None if value is None else value.to(device)
        return Batch(**moved)


# The value each per-token field takes on padding.
_PAD = {
    "position_ids": 0,
    "seq_index": -1,
    "response_mask": False,
    "chunk_ids": NOT_GENERATED,
    "mu_logprobs": 0.0,
}


def collate(sequences: list[ChunkedSequence], pad_id: int, mode: Mode = "pad") -> Batch:
    """One batch from `sequences`, in their order (see the module docstring for the modes)."""
    if not sequences:
        raise ValueError("collate needs at least one sequence")
    if mode not in ("pad", "pack"):
        raise ValueError(f"mode must be 'pad' or 'pack', not {mode!r}")
    rows = [_tensors(s, i) for i, s in enumerate(sequences)]
    fields = {name: [row[name] for row in rows] for name in rows[0]}
    if mode == "pack":
        tokens = {name: torch.cat(values).unsqueeze(0) for name, values in fields.items()}
        attention_mask = None
    else:
        pads = {"input_ids": pad_id, **_PAD}
        tokens = {
            name: pad_sequence(values, batch_first=True, padding_value=pads[name])
            for name, values in fields.items()
        }
        attention_mask = (tokens["seq_index"] >= 0).long()
    return Batch(
        **tokens,
        attention_mask=attention_mask,
        rewards=torch.tensor([s.reward for s in sequences], dtype=torch.float32),
        success=torch.tensor([s.passed for s in sequences], dtype=torch.bool),
        num_chunks=torch.tensor([s.num_chunks for s in sequences], dtype=torch.long),
    )


def _tensors(sequence: ChunkedSequence, index: int) -> dict[str, torch.Tensor]:
    n = len(sequence)
    return {
        "input_ids": torch.tensor(sequence.input_ids, dtype=torch.long),
        "position_ids": torch.arange(n, dtype=torch.long),
        "seq_index": torch.full((n,), index, dtype=torch.long),
        "response_mask": torch.tensor(sequence.response_mask, dtype=torch.bool),
        "chunk_ids": torch.tensor(sequence.chunk_ids, dtype=torch.long),
        "mu_logprobs": torch.tensor(sequence.mu_logprobs, dtype=torch.float32),
    }
