"""The local transformers backend: a tiny random Llama for the mechanics, SmolLM2 for real."""

from __future__ import annotations

import copy
import shutil
import time
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

import torch

from rockroll.errors import ModelError
from rockroll.models import Model, attention, make_model
from rockroll.models.generation import Generated, generate
from rockroll.models.local import LocalModel, load_local, tiny_random_model
from rockroll.models.messages import Message, ToolCall

CHAT = [Message(role="system", content="be brief"), Message(role="user", content="hi")]


@pytest.fixture(scope="module")
def tiny() -> LocalModel:
    return tiny_random_model(seed=0)


def _max_diff(a: list[float], b: list[float]) -> float:
    assert len(a) == len(b)
    return max(abs(x - y) for x, y in zip(a, b, strict=True))


def test_complete_records_token_ids_and_logprobs(tiny: LocalModel) -> None:
    assert isinstance(tiny, Model)
    assert tiny.native_tools is False
    c = tiny.complete(CHAT, None, max_tokens=8)
    assert c.finish_reason == "length"
    assert c.token_ids is not None and c.logprobs is not None
    assert len(c.token_ids) == len(c.logprobs) == c.completion_tokens == 8
    assert all(lp <= 0 for lp in c.logprobs)
    assert c.prompt_token_ids == tiny.encode(CHAT)
    assert c.prompt_tokens == len(c.prompt_token_ids) == tiny.count_tokens(CHAT)
    assert c.message.role == "assistant"
    assert (
        c.message.content == c.raw == tiny.tokenizer.decode(c.token_ids, skip_special_tokens=True)
    )


def test_generation_is_deterministic_for_a_seed(tiny: LocalModel) -> None:
    greedy = [tiny.complete(CHAT, None, max_tokens=6).token_ids for _ in range(2)]
    assert greedy[0] == greedy[1]
    sampled = [
        tiny.complete(CHAT, None, max_tokens=6, temperature=1.0, seed=s).token_ids
        for s in (1, 1, 2)
    ]
    assert sampled[0] == sampled[1]
    assert sampled[0] != sampled[2]


def test_stops_at_end_of_turn_and_keeps_the_stop_token(
    tiny: LocalModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert tiny.tokenizer.convert_tokens_to_ids("<|im_end|>") in tiny.stop_ids
    ids = tiny.complete(CHAT, None, max_tokens=8).token_ids
    assert ids is not None
    monkeypatch.setattr(tiny, "stop_ids", frozenset({ids[3]}))
    c = tiny.complete(CHAT, None, max_tokens=8)
    assert c.finish_reason == "stop"
    assert c.token_ids == ids[: ids.index(ids[3]) + 1]


@pytest.mark.parametrize("temperature", [0.0, 0.7])
def test_score_reproduces_generation_logprobs(tiny: LocalModel, temperature: float) -> None:
    c = tiny.complete(CHAT, None, max_tokens=16, temperature=temperature, seed=3)
    assert c.prompt_token_ids and c.token_ids and c.logprobs
    diff = _max_diff(tiny.score(c.prompt_token_ids, c.token_ids, temperature), c.logprobs)
    print(f"tiny model, temperature {temperature}: max |logprob diff| {diff:.2e}")
    assert diff < 1e-4


def test_context_window_caps_generation(tiny: LocalModel) -> None:
    n = tiny.count_tokens(CHAT)
    small = LocalModel(tiny.model, tiny.tokenizer, "small", context_window=n + 3)
    c = small.complete(CHAT, None, max_tokens=50)
    assert c.completion_tokens == 3 and c.finish_reason == "length"
    with pytest.raises(ModelError, match="context window"):
        LocalModel(tiny.model, tiny.tokenizer, "tiny", context_window=n).complete(CHAT, None)


def test_chat_template_renders_every_role(tiny: LocalModel) -> None:
    call = ToolCall(id="call_1", name="bash", arguments={"command": "ls"})
    messages = [
        *CHAT,
        Message(role="assistant", content="let me look", tool_calls=[call]),
        Message(role="tool", content="a.txt", tool_call_id="call_1", name="bash"),
    ]
    text = tiny.render(messages)
    assert "<|im_start|>system\nbe brief<|im_end|>" in text
    assert "<|im_start|>user\nhi<|im_end|>" in text
    # SmolLM2's template knows no tools: calls go into the text, results come back as user turns.
    assert '<|im_start|>assistant\nlet me look\n<tool_call>{"name": "bash"' in text
    assert "<|im_start|>user\nObservation: a.txt<|im_end|>" in text
    assert "<|im_start|>tool" not in text
    assert text.endswith("<|im_start|>assistant\n")
    assert tiny.count_tokens(messages) == len(tiny.encode(messages))


def test_template_with_tool_support_keeps_tool_role_and_gets_tools(
    tiny: LocalModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    template = (
        "{% if tools %}[{{ tools | map(attribute='function.name') | join(',') }}]{% endif %}"
        "{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}<assistant>"
    )
    monkeypatch.setattr(tiny.tokenizer, "chat_template", template)
    tools = [{"type": "function", "function": {"name": "bash", "parameters": {}}}]
    messages = [*CHAT, Message(role="tool", content="out", tool_call_id="c", name="bash")]
    assert tiny.render(messages, tools) == "[bash]<system>be brief<user>hi<tool>out<assistant>"


def test_strict_template_gets_merged_alternating_turns(
    tiny: LocalModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    template = (
        "{% for m in messages %}"
        "{% if not loop.first and m.role == messages[loop.index0 - 1].role %}"
        "{{ raise_exception('roles must alternate') }}{% endif %}"
        "<{{ m.role }}>{{ m.content }}{% endfor %}<assistant>"
    )
    monkeypatch.setattr(tiny.tokenizer, "chat_template", template)
    messages = [*CHAT, Message(role="user", content="again")]
    assert tiny.render(messages) == "<system>be brief<user>hi\n\nagain<assistant>"


def test_unknown_names_are_model_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ModelError, match="smollm2"):
        load_local("no-such-model")
    with pytest.raises(ModelError, match="dtype"):
        load_local("smollm2", dtype="float77")
    # "local:" is registered lazily: the spec imports this backend only when asked for.
    with pytest.raises(ModelError, match="smollm2"):
        make_model("local:no-such-model", api_key="ignored")


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalModel, float, float]]:
    """SmolLM2 loaded twice into a fresh home: converting the GGUF, then from the cache."""
    home = tmp_path_factory.mktemp("rockroll-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ROCKROLL_HOME", str(home))
        start = time.perf_counter()
        load_local("smollm2")
        first = time.perf_counter() - start
        assert (home / "models" / "smollm2" / "model.safetensors").is_file()
        start = time.perf_counter()
        model = load_local("smollm2")
        second = time.perf_counter() - start
        yield model, first, second
    shutil.rmtree(home, ignore_errors=True)  # half a gigabyte of float32 weights


@pytest.mark.slow
def test_smollm2_safetensors_cache_is_reused(smollm2: tuple[LocalModel, float, float]) -> None:
    _, first, second = smollm2
    print(f"SmolLM2 load: {first:.1f}s converting the GGUF, {second:.1f}s from the cache")
    assert second < first


@pytest.mark.slow
def test_smollm2_answers_and_rescores(smollm2: tuple[LocalModel, float, float]) -> None:
    model, _, _ = smollm2
    assert model.context_window == 8192
    question = [Message(role="user", content="What is the capital of France? Answer briefly.")]
    start = time.perf_counter()
    c = model.complete(question, None, max_tokens=32)
    seconds = time.perf_counter() - start
    assert c.token_ids and c.logprobs and c.prompt_token_ids
    print(f"SmolLM2: {len(c.token_ids) / seconds:.1f} tokens/s, {c.message.content!r}")
    assert "Paris" in c.message.content
    assert c.finish_reason == "stop"
    assert seconds < 30
    s = model.complete(question, None, max_tokens=16, temperature=0.7, seed=0)
    for temperature, done in ((0.0, c), (0.7, s)):
        assert done.prompt_token_ids and done.token_ids and done.logprobs
        rescored = model.score(done.prompt_token_ids, done.token_ids, temperature)
        diff = _max_diff(rescored, done.logprobs)
        print(f"SmolLM2, temperature {temperature}: max |logprob diff| {diff:.2e}")
        assert diff < 1e-3


def test_next_prompt_keeps_the_sampled_ids_not_a_re_encoding(
    tiny: LocalModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A "hello" sampled letter by letter must reach the next prompt as those five ids, although
    encoding the re-rendered conversation would give one token for it."""
    tok = tiny.tokenizer
    letters = [tok.convert_tokens_to_ids(ch) for ch in "hello"]
    assert tok.encode("hello", add_special_tokens=False) != letters
    with monkeypatch.context() as mp:
        mp.setattr(tiny, "_generate", lambda *a: Generated(letters, [-1.0] * 5, False))
        first = tiny.complete(CHAT, None)
    assert first.message.content == "hello"
    follow = [*CHAT, first.message, Message(role="user", content="and now?")]
    second = tiny.complete(follow, None, max_tokens=2)
    assert first.prompt_token_ids and second.prompt_token_ids
    sampled = first.prompt_token_ids + letters
    assert second.prompt_token_ids[: len(sampled)] == sampled
    assert tok.decode(second.prompt_token_ids) == tiny.render(follow)
    # A conversation that does not extend a remembered one is encoded as the template says.
    other = [Message(role="user", content="hello")]
    assert tiny.complete(other, None, max_tokens=1).prompt_token_ids == tiny.encode(other)


def test_concurrent_calls_are_decoded_together_with_the_same_results(tiny: LocalModel) -> None:
    """Threads calling at once share a batch, and each gets what it would have got alone."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    chats = [[Message(role="user", content="x" * n)] for n in (1, 5, 9, 13)]
    alone = [tiny.complete(c, None, max_tokens=6, temperature=1.0, seed=3) for c in chats]
    prefills: list[int] = []  # rows of each prefill (a forward over more than one position)

    def count(_module: Any, _args: Any, kwargs: dict) -> None:
        rows, width = kwargs["input_ids"].shape
        if width > 1:
            prefills.append(rows)

    # Each caller announces itself (as a rollout's episodes do) before any of them calls, so
    # the batch waits for the others' arrivals instead of a 2 ms linger.
    ready = threading.Barrier(len(chats))

    def call(chat: list[Message]) -> Any:
        with tiny.joined():
            ready.wait(10)
            return tiny.complete(chat, None, max_tokens=6, temperature=1.0, seed=3)

    hook = tiny.model.register_forward_pre_hook(count, with_kwargs=True)
    try:
        with ThreadPoolExecutor(len(chats)) as pool:
            together = list(pool.map(call, chats))
    finally:
        hook.remove()
    assert sum(prefills) == len(chats) and max(prefills) > 1, prefills
    for a, t in zip(alone, together, strict=True):
        assert t.token_ids == a.token_ids
        assert t.logprobs == pytest.approx(a.logprobs, abs=1e-4)


def _bf16_twin(model: LocalModel) -> Any:
    """A fresh bfloat16 copy of the weights with grouped attention (buffers as they are)."""
    twin = copy.deepcopy(model.model)
    for p in twin.parameters():
        p.data = p.data.to(torch.bfloat16)
    twin.set_attn_implementation(attention.NAME)
    return twin.eval()


def test_decode_copy_generates_with_the_synced_weights_and_leaves_the_model_alone() -> None:
    policy = tiny_random_model(seed=1)
    original = policy.model.config._attn_implementation
    policy.use_decode_copy()
    twin = policy._decode_copy
    assert twin.dtype == torch.bfloat16 and twin.config._attn_implementation == attention.NAME
    assert twin.lm_head.weight is twin.model.embed_tokens.weight  # still tied
    assert policy.model.dtype == torch.float32
    assert policy.model.config._attn_implementation == original
    stale = policy.complete(CHAT, None, max_tokens=8)
    with torch.no_grad():  # an optimizer step on the float32 weights
        draw = torch.Generator().manual_seed(0)
        for p in policy.model.parameters():
            p.add_(torch.randn(p.shape, generator=draw) * 0.05)
    storage = [p.data_ptr() for p in twin.parameters()]
    policy.sync_decode_copy()
    assert [p.data_ptr() for p in twin.parameters()] == storage  # copied in place
    synced = policy.complete(CHAT, None, max_tokens=8)
    assert synced.token_ids != stale.token_ids
    [expected] = generate(
        _bf16_twin(policy), [synced.prompt_token_ids], max_tokens=8, stop_ids=policy.stop_ids
    )
    assert synced.token_ids == expected.token_ids
    assert synced.logprobs == expected.logprobs


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_decode_copy_logprobs_match_a_rescoring_of_the_copy(temperature: float) -> None:
    policy = tiny_random_model(seed=2)
    policy.use_decode_copy()
    c = policy.complete(CHAT, None, max_tokens=24, temperature=temperature, seed=5)
    assert c.prompt_token_ids and c.token_ids and c.logprobs
    copy_model = LocalModel(policy._decode_copy, policy.tokenizer, "copy", 2048)
    rescored = copy_model.score(c.prompt_token_ids, c.token_ids, temperature)
    assert _max_diff(rescored, c.logprobs) < 1e-2
    # The float32 model (what `score` uses) is close, but not bfloat16-exact.
    assert _max_diff(policy.score(c.prompt_token_ids, c.token_ids, temperature), c.logprobs) < 0.05
