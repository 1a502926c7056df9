"""Eager attention for grouped-query models that reads the KV cache in place.

transformers' eager attention copies every key and value head once per query head of its group
(`repeat_kv`) before its matmuls: at each decoding step that is a fresh copy of the whole cache,
group-size times over, about a seventh of a bfloat16 SmolLM2 step on CPU (SDPA avoids the copy
but is slower still there). Here the query heads of a group are stacked into one matrix instead,
with eager's arithmetic otherwise (scores in the model's dtype, softmax in float32).

A long prompt's prefill is taken `QUERY_CHUNK` query positions at a time: the scores of a whole
8k-token prompt at once, for a batch of 8 and 9 heads, would be ~37 GB; in chunks of 256 they
are ~1 GB, for the same arithmetic.
"""

from __future__ import annotations

from typing import Any

import torch

NAME = "rockroll_grouped"
QUERY_CHUNK = 256  # query positions whose scores are held at once


def grouped_attention(
    module: Any,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """Attention of `query` [batch, heads, q, dim] over `key`/`value` [batch, kv_heads, k, dim],
    query head h reading kv head h // (heads / kv_heads), as `repeat_kv` lays them out."""
    extras = [k for k in ("softcap", "s_aux", "sinks") if kwargs.get(k) is not None]
    if extras or dropout or (attention_mask is not None and attention_mask.shape[1] != 1):
        raise NotImplementedError(
            f"{NAME} attention covers plain (Llama-style) attention, without dropout, "
            f"per-head masks or {', '.join(extras) or 'softcap or sinks'}; use eager"
        )
    batch, heads, length, dim = query.shape
    if length > QUERY_CHUNK:
        parts = [
            grouped_attention(
                module,
                query[:, :, i : i + QUERY_CHUNK],
                key,
                value,
                None if attention_mask is None else attention_mask[:, :, i : i + QUERY_CHUNK],
                scaling,
            )[0]
            for i in range(0, length, QUERY_CHUNK)
        ]
        return torch.cat(parts, dim=1), None
    kv_heads = key.shape[1]
    stacked = query.reshape(batch, kv_heads, heads // kv_heads * length, dim)
    scores = torch.matmul(stacked, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        grouped = scores.view(batch, kv_heads, heads // kv_heads, length, -1)
        scores = (grouped + attention_mask[:, :, None]).flatten(2, 3)
    weights = torch.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    out = torch.matmul(weights, value).view(batch, heads, length, dim)
    return out.transpose(1, 2).contiguous(), None


def register() -> str:
    """Make `NAME` an attention implementation transformers models accept; returns `NAME`."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    AttentionInterface.register(NAME, grouped_attention)
    AttentionMaskInterface.register(NAME, eager_mask)
    return NAME
