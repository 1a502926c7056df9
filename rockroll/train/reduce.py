"""Reductions over tokens: means per group of tokens (a chunk, a sequence) and the loss
aggregation modes. Shared by every loss so they all treat masks and empty groups alike."""

from __future__ import annotations

from typing import Literal

import torch

Aggregation = Literal["token-mean", "seq-mean-token-mean", "seq-mean-token-sum"]
AGGREGATIONS: tuple[str, ...] = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum")


def segment_sum_count(
    values: torch.Tensor, index: torch.Tensor, size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum and count of `values` per `index` in [0, size); entries with index < 0 are left out."""
    values, index = values.reshape(-1), index.reshape(-1)
    keep = index >= 0
    picked, at = values[keep], index[keep]
    sums = values.new_zeros(size).index_add(0, at, picked)
    counts = values.new_zeros(size).index_add(0, at, torch.ones_like(picked))
    return sums, counts


def segment_mean(values: torch.Tensor, index: torch.Tensor, size: int) -> torch.Tensor:
    """Mean of `values` per `index` in [0, size); 0 for an index no entry has."""
    sums, counts = segment_sum_count(values, index, size)
    return sums / counts.clamp(min=1)


def aggregate(
    token_loss: torch.Tensor,
    mask: torch.Tensor,
    seq_index: torch.Tensor,
    mode: Aggregation = "token-mean",
) -> torch.Tensor:
    """A per-token loss reduced to a scalar over the tokens where `mask` is true.

    token-mean: sum over tokens / number of tokens (long sequences weigh more);
    seq-mean-token-mean: mean per sequence, then mean over sequences (each sequence the same);
    seq-mean-token-sum: sum per sequence, then mean over sequences.
    A sequence with no unmasked token is left out of the mean over sequences, and a fully
    masked batch gives 0 with a zero gradient rather than NaN.
    """
    if mode not in AGGREGATIONS:
        raise ValueError(f"unknown aggregation {mode!r}; use one of {', '.join(AGGREGATIONS)}")
    mask = mask.bool()
    loss = torch.where(mask, token_loss, torch.zeros_like(token_loss))
    if mode == "token-mean":
        return loss.sum() / mask.sum().clamp(min=1)
    size = int(seq_index.max()) + 1 if seq_index.numel() else 0
    sums, counts = segment_sum_count(loss, torch.where(mask, seq_index, -1), max(size, 0))
    per_seq = sums / counts.clamp(min=1) if mode == "seq-mean-token-mean" else sums
    present = counts > 0
    return torch.where(present, per_seq, 0).sum() / present.sum().clamp(min=1)
