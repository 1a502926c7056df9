"""Grouped attention: eager's results on grouped-query models, and refused where it would not be."""

from __future__ import annotations

import copy

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

import torch

from rockroll.models import attention
from rockroll.models.generation import generate
from rockroll.models.local import LocalModel, tiny_random_model
from rockroll.models.messages import Message


def _gqa_llama() -> torch.nn.Module:
    """Six query heads sharing two key/value heads, with weights large enough to matter."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=300, hidden_size=48, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=6, num_key_value_heads=2, max_position_embeddings=256,
        bos_token_id=None, eos_token_id=None, pad_token_id=None,
    )  # fmt: skip
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3)
    return model


def test_grouped_attention_gives_eagers_tokens_and_logprobs() -> None:
    model = _gqa_llama()
    eager, grouped = copy.deepcopy(model), copy.deepcopy(model)
    eager.set_attn_implementation("eager")
    grouped.set_attn_implementation(attention.register())
    draw = torch.Generator().manual_seed(0)
    prompts = [torch.randint(0, 300, (n,), generator=draw).tolist() for n in (3, 17, 40, 17)]
    ids = torch.tensor([prompts[2]])
    with torch.inference_mode():
        assert torch.allclose(eager(ids).logits, grouped(ids).logits, atol=1e-5)
    run = dict(max_tokens=20, temperature=1.0, seeds=[1, 2, 3, 4])
    expected = generate(eager, prompts, **run)  # left padded: the mask path too
    got = generate(grouped, prompts, **run)
    for e, g in zip(expected, got, strict=True):
        assert g.token_ids == e.token_ids
        assert max(abs(a - b) for a, b in zip(g.logprobs, e.logprobs, strict=True)) < 1e-5


def test_a_long_prefill_in_query_chunks_gives_the_same_logits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = _gqa_llama()
    model.set_attn_implementation(attention.register())
    draw = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 300, (2, 50), generator=draw)
    mask = torch.ones_like(ids)
    mask[1, :7] = 0  # left padding: the mask is sliced with the queries
    with torch.inference_mode():
        whole = model(ids, attention_mask=mask).logits
        monkeypatch.setattr(attention, "QUERY_CHUNK", 8)  # 50 positions: 7 chunks, one short
        chunked = model(ids, attention_mask=mask).logits
    assert torch.allclose(whole[0], chunked[0], atol=1e-5)
    assert torch.allclose(whole[1, 7:], chunked[1, 7:], atol=1e-5)


def test_decode_copy_falls_back_to_eager_where_grouped_attention_does_not_apply() -> None:
    from transformers import Gemma2Config, Gemma2ForCausalLM

    tiny = tiny_random_model()
    tiny.use_decode_copy()
    assert tiny._decode_copy.config._attn_implementation == attention.NAME
    config = Gemma2Config(
        vocab_size=len(tiny.tokenizer), hidden_size=32, intermediate_size=64,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=8,
        max_position_embeddings=256, attn_logit_softcapping=50.0,
    )  # fmt: skip
    gemma = LocalModel(Gemma2ForCausalLM(config), tiny.tokenizer, "gemma", 256)
    gemma.use_decode_copy()  # its attention softcaps scores
    assert gemma._decode_copy.config._attn_implementation == "eager"
    chat = [Message(role="user", content="hi")]
    assert len(gemma.complete(chat, None, max_tokens=3).token_ids) == 3
