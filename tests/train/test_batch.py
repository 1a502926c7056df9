"""Batching: exact padded and packed layouts, and a real (tiny) model that gives every packed
or padded sequence the same logprobs as that sequence alone."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

import torch

from rockroll.models.local import tiny_random_model
from rockroll.train.batch import collate
from rockroll.train.chunks import ChunkedSequence
from rockroll.train.config import IPASettings
from rockroll.train.ipa import ipa_loss

PAD = 99


def _sequence(ids: list[int], chunks: list[int], reward: float, num_chunks: int) -> ChunkedSequence:
    return ChunkedSequence(
        input_ids=ids,
        response_mask=[int(c >= 0) for c in chunks],
        chunk_ids=chunks,
        mu_logprobs=[-0.5 if c >= 0 else 0.0 for c in chunks],
        reward=reward,
        passed=reward >= 1.0,
        num_chunks=num_chunks,
    )


A = _sequence([10, 11, 12, 13], [-1, 0, -1, 1], 1.0, 2)
B = _sequence([20, 21], [-1, 0], 0.0, 1)


def test_pad_layout() -> None:
    batch = collate([A, B], PAD, "pad")
    assert batch.input_ids.tolist() == [[10, 11, 12, 13], [20, 21, PAD, PAD]]
    assert batch.attention_mask is not None
    assert batch.attention_mask.tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]
    assert batch.position_ids.tolist() == [[0, 1, 2, 3], [0, 1, 0, 0]]
    assert batch.seq_index.tolist() == [[0, 0, 0, 0], [1, 1, -1, -1]]
    assert batch.response_mask.tolist() == [[False, True, False, True], [False, True, False, False]]
    assert batch.chunk_ids.tolist() == [[-1, 0, -1, 1], [-1, 0, -1, -1]]
    assert batch.mu_logprobs.tolist() == [[0.0, -0.5, 0.0, -0.5], [0.0, -0.5, 0.0, 0.0]]
    assert batch.rewards.tolist() == [1.0, 0.0] and batch.num_chunks.tolist() == [2, 1]
    assert set(batch.model_inputs()) == {"input_ids", "position_ids", "attention_mask", "use_cache"}


def test_pack_layout() -> None:
    batch = collate([A, B], PAD, "pack")
    assert batch.input_ids.tolist() == [[10, 11, 12, 13, 20, 21]]
    assert batch.position_ids.tolist() == [[0, 1, 2, 3, 0, 1]]
    assert batch.seq_index.tolist() == [[0, 0, 0, 0, 1, 1]]
    assert batch.chunk_ids.tolist() == [[-1, 0, -1, 1, -1, 0]]
    assert batch.response_mask.tolist() == [[False, True, False, True, False, True]]
    assert batch.attention_mask is None
    assert set(batch.model_inputs()) == {"input_ids", "position_ids", "use_cache"}
    assert batch.to("cpu").input_ids.tolist() == batch.input_ids.tolist()


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="at least one"):
        collate([], PAD)
    with pytest.raises(ValueError, match="'pad' or 'pack'"):
        collate([A], PAD, "ragged")  # type: ignore[arg-type]


def _token_logp(model: torch.nn.Module, inputs: dict[str, Any]) -> torch.Tensor:
    """log p(token t | tokens before it) at every position t >= 1."""
    with torch.no_grad():
        logits = model(**inputs).logits.float()
    logp = torch.log_softmax(logits[:, :-1], dim=-1)
    return logp.gather(2, inputs["input_ids"][:, 1:].unsqueeze(-1)).squeeze(-1)


def test_packed_and_padded_sequences_do_not_see_each_other() -> None:
    model = tiny_random_model(seed=0).model
    generator = torch.Generator().manual_seed(0)
    sequences = [
        _sequence(torch.randint(0, 4000, (n,), generator=generator).tolist(), [-1] * n, 0.0, 1)
        for n in (7, 4, 5)
    ]
    alone = [_token_logp(model, {"input_ids": torch.tensor([s.input_ids])})[0] for s in sequences]
    padded = _token_logp(model, collate(sequences, PAD, "pad").model_inputs())
    packed_batch = collate(sequences, PAD, "pack")
    packed = _token_logp(model, packed_batch.model_inputs())[0]
    start = 0
    for row, (sequence, reference) in enumerate(zip(sequences, alone, strict=True)):
        n = len(sequence)
        assert torch.allclose(padded[row, : n - 1], reference, atol=1e-5)
        assert torch.allclose(packed[start : start + n - 1], reference, atol=1e-5)
        start += n
    # Without positions restarting, the later sequences would attend to the earlier ones.
    leaky = _token_logp(model, {"input_ids": packed_batch.input_ids, "use_cache": False})[0]
    assert not torch.allclose(leaky[7:10], alone[1], atol=1e-3)


def test_ipa_loss_is_the_same_on_padded_and_packed_batches() -> None:
    sequences = [A, B, _sequence([30, 31, 32, 33, 34], [-1, 0, 0, -1, 1], 0.0, 2)]
    losses = []
    for mode in ("pad", "pack"):
        batch = collate(sequences, PAD, mode)
        logp = batch.mu_logprobs + 0.1 * batch.chunk_ids.clamp(min=0)
        out = ipa_loss(
            logp,
            batch.mu_logprobs,
            batch.response_mask,
            batch.chunk_ids,
            batch.seq_index,
            batch.rewards,
            batch.num_chunks,
            success=batch.success,
            mu_logp=batch.mu_logprobs,
            config=IPASettings(gamma=0.9),
            aggregation="seq-mean-token-mean",
        )
        losses.append(out.loss)
    assert torch.allclose(losses[0], losses[1])
    assert losses[0].abs() > 0
