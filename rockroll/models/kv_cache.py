"""Rows of two KV caches joined into one batch, and padding no row needs any more cut away.

Continuous batching admits new rows while others are decoding: the newcomers' prefill makes a
cache of its own, which is left padded (zeros, hidden by the attention mask) or pads the running
cache, so both have one length, and then stacked onto it along the batch. When the longest rows
finish, the columns on the left that every remaining row masks are dropped, so the rest do not
keep paying attention over a finished row's length.

This reads and replaces the `keys` and `values` tensors of transformers' `DynamicLayer` (the
cache of every full-attention decoder); a cache of another kind (sliding windows, recurrent
state) is refused with a ModelError rather than joined wrongly.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from rockroll.errors import ModelError


def _layers(cache: Any) -> list[Any]:
    if not plain(cache):
        raise ModelError(f"cannot join KV caches of {type(cache).__name__} row by row")
    return list(cache.layers)


def pad_left(cache: Any, columns: int) -> None:
    """Add `columns` empty positions before every row's keys and values."""
    if columns <= 0:
        return
    for layer in _layers(cache):
        layer.keys = F.pad(layer.keys, (0, 0, columns, 0))
        layer.values = F.pad(layer.values, (0, 0, columns, 0))


def stack(cache: Any, more: Any) -> None:
    """Append the rows of `more` (the same length) to `cache`, in place."""
    for layer, other in zip(_layers(cache), _layers(more), strict=True):
        layer.keys = torch.cat([layer.keys, other.keys], dim=0)
        layer.values = torch.cat([layer.values, other.values], dim=0)


def drop_left(cache: Any, columns: int) -> None:
    """Remove the first `columns` positions of every row (ones all rows mask)."""
    if columns <= 0:
        return
    for layer in _layers(cache):
        layer.keys = layer.keys[:, :, columns:]
        layer.values = layer.values[:, :, columns:]


def plain(cache: Any) -> bool:
    """Whether `cache` is one these functions can join and cut."""
    from transformers.cache_utils import DynamicLayer

    layers = list(getattr(cache, "layers", []))
    return bool(layers) and all(type(layer) is DynamicLayer for layer in layers)


def refuse_unless_joinable(config: Any, name: str) -> None:
    """Raise a ModelError unless the model of `config` makes caches these functions can join
    (told from the cache its forward would make, without running one)."""
    from transformers.cache_utils import DynamicCache

    cache = DynamicCache(config=config)
    if not plain(cache):
        kinds = sorted({type(layer).__name__ for layer in cache.layers})
        raise ModelError(
            f"{name} keeps a KV cache of {', '.join(kinds)}, which continuous batching cannot "
            "join row by row; serve it with --max-batch 1"
        )
