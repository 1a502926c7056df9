"""The update's forward pass: a prefix shared by all sequences runs once, and the logprobs and
parameter gradients are those of running every sequence whole."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

import torch

from rockroll.models.local import tiny_random_model
from rockroll.train.chunks import ChunkedSequence
from rockroll.train.update import (
    MIN_SHARED_PREFIX,
    backward_through_model,
    cost,
    forward_tokens,
    micro_batches,
    shared_prefix,
)

PAD = 0


def _episode(prompt: list[int], turns: list[tuple[list[int], list[int]]]) -> ChunkedSequence:
    """A prompt, then per turn the model's tokens and the environment's reply."""
    s = ChunkedSequence(reward=1.0, num_chunks=len(turns))
    s.add_environment(prompt)
    for k, (generated, observed) in enumerate(turns):
        s.add_turn(k, generated, [-1.0] * len(generated))
        s.add_environment(observed)
    return s


def _group(seed: int = 0) -> list[ChunkedSequence]:
    """Four episodes of one task (one 40-token prompt), of different lengths and turns."""
    g = torch.Generator().manual_seed(seed)

    def ids(n: int) -> list[int]:
        return torch.randint(5, 4000, (n,), generator=g).tolist()

    prompt = ids(40)
    return [
        _episode(prompt, [(ids(6), ids(5)), (ids(4), [])]),
        _episode(prompt, [(ids(9), [])]),
        _episode(prompt, [(ids(3), ids(7)), (ids(5), ids(2)), (ids(2), [])]),
        _episode(prompt, [(ids(1), [])]),
    ]


def _alone(model: torch.nn.Module, seqs: list[ChunkedSequence]) -> torch.Tensor:
    return torch.cat([forward_tokens(model, [s], PAD, entropy=False, amp=False)[0] for s in seqs])


def _reference(model: torch.nn.Module, seqs: list[ChunkedSequence]) -> torch.Tensor:
    """Each generated token's logprob from the plain model call on its whole sequence, with
    no code of the update's: the logits at position i - 1 predict token i."""
    out = []
    for s in seqs:
        ids = torch.tensor([s.input_ids])
        logp = torch.log_softmax(model(input_ids=ids).logits[0].float(), dim=-1)
        out += [logp[i - 1, s.input_ids[i]] for i, m in enumerate(s.response_mask) if m]
    return torch.stack(out)


def test_shared_prefix_stops_before_the_first_generated_token() -> None:
    seqs = _group()
    assert shared_prefix(seqs) == 39  # the logits at 39 predict the first generated token
    assert shared_prefix(seqs[:1]) == 0  # one sequence: nothing to share
    late = seqs[0]
    early = _episode(late.input_ids[:8], [([1, 2, 3], [])])
    assert shared_prefix([late, early]) == 0  # 7 < MIN_SHARED_PREFIX
    assert MIN_SHARED_PREFIX > 7
    other = _group(seed=1)
    assert shared_prefix([seqs[0], other[0]]) == 0  # different prompts
    assert cost(seqs) == 39 + 4 * (max(len(s) for s in seqs) - 39)


def test_logprobs_and_entropy_match_each_sequence_alone() -> None:
    model = tiny_random_model(seed=0).model
    seqs = _group()
    logp, ent = forward_tokens(model, seqs, PAD, entropy=True, amp=False)
    assert logp.numel() == sum(sum(s.response_mask) for s in seqs)
    assert torch.allclose(logp, _alone(model, seqs), atol=1e-5)
    with torch.no_grad():
        assert torch.allclose(logp, _reference(model, seqs), atol=1e-5)
    ent_alone = torch.cat(
        [forward_tokens(model, [s], PAD, entropy=True, amp=False)[1] for s in seqs]  # type: ignore[misc]
    )
    assert ent is not None and torch.allclose(ent, ent_alone, atol=1e-5)


def test_gradients_through_the_shared_prefix_match_whole_sequences() -> None:
    seqs = _group()
    weights = torch.linspace(-1, 1, sum(sum(s.response_mask) for s in seqs))

    def grads(micro_tokens: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        model = tiny_random_model(seed=0).model
        seen = backward_through_model(
            model, seqs, PAD, weights, None, amp=False, micro_tokens=micro_tokens
        )
        return seen, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    shared_logp, shared = grads(micro_tokens=10_000)  # one batch: the prompt runs once
    whole_logp, whole = grads(micro_tokens=1)  # one sequence per batch: nothing shared
    assert len(list(micro_batches(seqs, 10_000))) == 1
    assert len(list(micro_batches(seqs, 1))) == 4
    assert torch.allclose(shared_logp, whole_logp, atol=1e-5)
    assert shared.keys() == whole.keys()
    embed = next(n for n in shared if "embed" in n)
    assert shared[embed].abs().sum() > 0  # the prompt's tokens got gradient through the cache
    for name in shared:
        assert torch.allclose(shared[name], whole[name], atol=1e-5, rtol=1e-4), name
    # And both are the gradient of sum(w_t log p_t) taken by autograd on the plain model call.
    model = tiny_random_model(seed=0).model
    (_reference(model, seqs) * weights).sum().backward()
    for name, p in model.named_parameters():
        if p.grad is not None:
            assert torch.allclose(shared[name], p.grad, atol=1e-5, rtol=1e-4), name


def test_micro_batches_count_the_shared_prefix_once() -> None:
    seqs = _group()
    longest = max(len(s) for s in seqs)
    budget = 39 + 4 * (longest - 39)
    assert [len(b) for b in micro_batches(seqs, budget)] == [4]
    assert 4 * longest > budget  # padded whole, the same four would not fit
    assert sum(len(b) for b in micro_batches(seqs, budget - 1)) == 4


def test_micro_batches_break_between_groups() -> None:
    first, second = _group(seed=0), _group(seed=1)
    batches = list(micro_batches(first + second, 10_000))
    assert [len(b) for b in batches] == [4, 4]  # one batch each, though both would fit in one
    assert all(shared_prefix(b) == 39 for b in batches)
