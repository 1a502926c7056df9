"""Batched generation on a tiny random Llama: the same tokens and logprobs as one prompt alone."""

from __future__ import annotations

import inspect
from functools import partial

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

import torch

from rockroll.models.generation import Generated, generate
from rockroll.models.local import LocalModel, tiny_random_model
from rockroll.models.messages import Message

INSTRUCTIONS = [
    "hi",
    "List the files in /root, then tell me which one is the largest and why it might be.",
    "Fix the failing test in tests/test_parse.py without changing its assertions; run the "
    "whole suite afterwards and report what changed, file by file.",
]


@pytest.fixture(scope="module")
def tiny() -> LocalModel:
    return tiny_random_model(seed=0)


@pytest.fixture(scope="module")
def prompts(tiny: LocalModel) -> list[list[int]]:
    """Prompts of quite different lengths (one of a single token), so rows are left padded."""
    chats = [[Message(role="system", content="be brief"), Message(role="user", content="hi")]]
    chats += [[Message(role="user", content=text)] for text in INSTRUCTIONS]
    encoded = [tiny.encode(chat) for chat in chats]
    return [*encoded, encoded[0][:1]]


@torch.inference_mode()
def _reference(
    tiny: LocalModel, prompt: list[int], max_tokens: int, temperature: float, seed: int
) -> tuple[list[int], list[float], bool]:
    """The plainest decoding loop (one row, no mask, no positions, a KV cache), written
    independently of `generate` so the two can disagree."""
    generator = torch.Generator().manual_seed(seed)
    name = (
        "cache"
        if "cache" in inspect.signature(tiny.model.forward).parameters
        else ("past_key_values")
    )
    ids, cache = torch.tensor([prompt]), None
    tokens: list[int] = []
    logprobs: list[float] = []
    for _ in range(max_tokens):
        out = tiny.model(input_ids=ids, use_cache=True, **{name: cache})
        cache = getattr(out, name)
        logits = out.logits[0, -1].float()
        if temperature > 0:
            logp = torch.log_softmax(logits / temperature, dim=-1)
            draw = float(torch.rand(1, generator=generator)) * float(logp.exp().sum())
            token = next(i for i, c in enumerate(logp.exp().cumsum(0).tolist()) if c > draw)
        else:
            logp = torch.log_softmax(logits, dim=-1)
            token = int(torch.argmax(logp))
        tokens.append(token)
        logprobs.append(float(logp[token]))
        if token in tiny.stop_ids:
            return tokens, logprobs, True
        ids = torch.tensor([[token]])
    return tokens, logprobs, False


def _assert_same(got: Generated, expected: tuple[list[int], list[float], bool]) -> None:
    """Tokens and stop exactly; logprobs to an ulp or so: the reference's prefill computes the
    logits of every position and generate's only the last, and those matmuls round apart."""
    assert (got.token_ids, got.stopped) == (expected[0], expected[2])
    assert _max_diff(got.logprobs, expected[1]) <= 1e-5


def _max_diff(a: list[float], b: list[float]) -> float:
    assert len(a) == len(b)
    return max((abs(x - y) for x, y in zip(a, b, strict=True)), default=0.0)


@pytest.mark.parametrize("temperature", [0.0, 1.0])
@pytest.mark.parametrize("seed", [0, 1, 2, 7])
def test_one_prompt_is_exactly_a_plain_decoding_loop(
    tiny: LocalModel, prompts: list[list[int]], temperature: float, seed: int
) -> None:
    prompt = prompts[seed % len(prompts)]
    expected = _reference(tiny, prompt, 24, temperature, seed)
    [got] = generate(
        tiny.model,
        [prompt],
        max_tokens=24,
        temperature=temperature,
        seeds=[seed],
        stop_ids=tiny.stop_ids,
    )
    _assert_same(got, expected)


def test_one_prompt_stops_where_a_plain_loop_stops(
    tiny: LocalModel, prompts: list[list[int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    [free] = generate(tiny.model, [prompts[1]], max_tokens=16, temperature=1.0, seeds=[3])
    stop = free.token_ids[5]
    monkeypatch.setattr(tiny, "stop_ids", frozenset({stop}))
    expected = _reference(tiny, prompts[1], 16, 1.0, 3)
    [got] = generate(
        tiny.model, [prompts[1]], max_tokens=16, temperature=1.0, seeds=[3], stop_ids={stop}
    )
    assert expected[2] and got.stopped
    assert got.token_ids[-1] == stop and len(got.token_ids) <= 6
    _assert_same(got, expected)


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_batch_rows_equal_each_prompt_alone(
    tiny: LocalModel, prompts: list[list[int]], temperature: float
) -> None:
    seeds = [11, 12, 13, 14, 15]
    run = partial(generate, tiny.model, max_tokens=20, temperature=temperature)
    batch = run(prompts, seeds=seeds, stop_ids=tiny.stop_ids)
    alone = [
        run([p], seeds=[s], stop_ids=tiny.stop_ids)[0] for p, s in zip(prompts, seeds, strict=True)
    ]
    assert len({len(p) for p in prompts}) == len(prompts)
    assert len({tuple(g.token_ids) for g in batch}) > 1
    for b, a in zip(batch, alone, strict=True):
        assert b.token_ids == a.token_ids and b.stopped == a.stopped
        assert _max_diff(b.logprobs, a.logprobs) < 1e-4


def test_a_rows_samples_do_not_depend_on_its_neighbours(
    tiny: LocalModel, prompts: list[list[int]]
) -> None:
    seeds = [21, 22, 23, 24, 25]
    forward = generate(tiny.model, prompts, max_tokens=12, temperature=1.0, seeds=seeds)
    backward = generate(
        tiny.model, prompts[::-1], max_tokens=12, temperature=1.0, seeds=seeds[::-1]
    )
    assert [g.token_ids for g in forward] == [g.token_ids for g in backward[::-1]]
    reseeded = generate(tiny.model, prompts, max_tokens=12, temperature=1.0, seeds=seeds[::-1])
    assert [g.token_ids for g in reseeded] != [g.token_ids for g in forward]


@pytest.mark.parametrize("temperature", [0.0, 0.7])
def test_batch_logprobs_match_a_full_rescore(
    tiny: LocalModel, prompts: list[list[int]], temperature: float
) -> None:
    batch = generate(
        tiny.model, prompts, max_tokens=24, temperature=temperature, seeds=[1, 2, 3, 4, 5]
    )
    for prompt, g in zip(prompts, batch, strict=True):
        rescored = tiny.score(prompt, g.token_ids, temperature)
        assert _max_diff(rescored, g.logprobs) < 1e-4


def test_each_row_ends_at_its_own_stop_id(tiny: LocalModel, prompts: list[list[int]]) -> None:
    run = partial(
        generate, tiny.model, prompts, max_tokens=16, temperature=1.0, seeds=[5, 6, 7, 8, 9]
    )
    free = run()
    stop = free[1].token_ids[4]
    stopped = run(stop_ids={stop})
    ended = 0
    for f, s in zip(free, stopped, strict=True):
        cut = f.token_ids.index(stop) + 1 if stop in f.token_ids else len(f.token_ids)
        assert s.token_ids == f.token_ids[:cut]
        assert _max_diff(s.logprobs, f.logprobs[:cut]) < 1e-4
        assert s.stopped == (stop in f.token_ids)
        ended += s.stopped
    assert 0 < ended < len(prompts)  # some rows went on after others had left the batch


def test_per_row_token_limits(tiny: LocalModel, prompts: list[list[int]]) -> None:
    full = generate(tiny.model, prompts[:3], max_tokens=9)
    limited = generate(tiny.model, prompts[:3], max_tokens=[3, 0, 9])
    assert [len(g.token_ids) for g in limited] == [3, 0, 9]
    assert limited[0].token_ids == full[0].token_ids[:3]
    assert limited[1] == Generated([], [], False)
    assert limited[2].token_ids == full[2].token_ids
    assert not any(g.stopped for g in limited)
    assert generate(tiny.model, prompts[:2], max_tokens=0) == [Generated([], [], False)] * 2


def test_bad_arguments_are_refused(tiny: LocalModel, prompts: list[list[int]]) -> None:
    with pytest.raises(ValueError, match="at least one token"):
        generate(tiny.model, [prompts[0], []], max_tokens=4)
    with pytest.raises(ValueError, match="one value per prompt"):
        generate(tiny.model, prompts[:2], max_tokens=4, seeds=[1])
    with pytest.raises(ValueError, match="one value per prompt"):
        generate(tiny.model, prompts[:2], max_tokens=[4])
    with pytest.raises(ValueError, match="temperature"):
        generate(tiny.model, prompts[:2], max_tokens=4, temperature=-1.0)


def test_padded_rows_keep_their_absolute_positions() -> None:
    """RoPE is blind to a shift of all positions; GPT-2's learned position embeddings are not."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=300, n_positions=128, n_embd=32, n_layer=2, n_head=4, bos_token_id=None,
        eos_token_id=None,
    )  # fmt: skip
    model = GPT2LMHeadModel(config).eval()
    draw = torch.Generator().manual_seed(0)
    prompts = [torch.randint(0, 300, (n,), generator=draw).tolist() for n in (3, 17, 40)]
    run = partial(generate, model, max_tokens=12, temperature=1.0)
    batch = run(prompts, seeds=[1, 2, 3])
    for prompt, seed, b in zip(prompts, [1, 2, 3], batch, strict=True):
        [alone] = run([prompt], seeds=[seed])
        assert b.token_ids == alone.token_ids
        assert _max_diff(b.logprobs, alone.logprobs) < 1e-4


@pytest.mark.parametrize("temperature", [0.0, 1.0])
@pytest.mark.parametrize("mixed", [True, False])
def test_rows_of_one_prompt_share_a_prefill_and_sample_as_if_alone(
    tiny: LocalModel, prompts: list[list[int]], temperature: float, mixed: bool
) -> None:
    order = [1, 2, 1, 1, 3, 2] if mixed else [1, 1, 1, 1]
    batch_prompts = [prompts[i] for i in order]
    seeds = [31 + j for j in range(len(order))]
    widths: list[int] = []
    hook = tiny.model.register_forward_pre_hook(
        lambda _m, _a, kw: widths.append(kw["input_ids"].shape[0]), with_kwargs=True
    )
    try:
        run = partial(generate, tiny.model, max_tokens=16, temperature=temperature)
        batch = run(batch_prompts, seeds=seeds, stop_ids=tiny.stop_ids)
    finally:
        hook.remove()
    assert widths[0] == len(set(order))  # one prefill row per distinct prompt
    assert widths[1] == len(order)
    for prompt, seed, b in zip(batch_prompts, seeds, batch, strict=True):
        [alone] = run([prompt], seeds=[seed], stop_ids=tiny.stop_ids)
        assert b.token_ids == alone.token_ids and b.stopped == alone.stopped
        assert _max_diff(b.logprobs, alone.logprobs) < 1e-4
    if temperature > 0:  # rows of one prompt still draw their own samples
        assert len({tuple(batch[j].token_ids) for j, i in enumerate(order) if i == 1}) > 1
