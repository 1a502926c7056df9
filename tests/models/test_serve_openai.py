"""The model server driven by the official `openai` SDK (sync, async and streaming) and by
litellm: the parameters it honours behave as against OpenAI, the ones it does not are refused by
name with the SDK's own exception class, and every error has OpenAI's body."""

from __future__ import annotations

import asyncio
import json

import httpx
import litellm
import openai
import pytest

CHAT = [{"role": "developer", "content": "be brief"}, {"role": "user", "content": "list files"}]
TOOLS = [{"type": "function", "function": {"name": "bash", "parameters": {"type": "object"}}}]


@pytest.fixture(scope="module")
def client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=120)


def test_models_one_by_one_and_unknown_routes_answer_as_openai(client: openai.OpenAI) -> None:
    assert [m.id for m in client.models.list()] == ["tiny"]
    assert client.models.retrieve("tiny").id == "tiny"
    with pytest.raises(openai.NotFoundError, match="'gpt-9' is not served here"):
        client.models.retrieve("gpt-9")
    with pytest.raises(openai.NotFoundError) as missing:
        client.get("/no/such/route", cast_to=object)
    assert missing.value.body["message"].startswith("no route GET /v1/no/such/route")  # type: ignore[index]


def test_developer_role_n_and_seeds(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model="tiny", messages=CHAT, max_tokens=5, temperature=1.0, seed=3, n=3
    )
    assert [c.index for c in reply.choices] == [0, 1, 2]
    texts = [c.message.content for c in reply.choices]
    assert len(set(texts)) > 1  # each choice its own draw (seed + index)
    assert reply.usage is not None and reply.usage.completion_tokens == 15
    again = client.chat.completions.create(
        model="tiny", messages=CHAT, max_tokens=5, temperature=1.0, seed=4
    )
    assert again.choices[0].message.content == texts[1]  # choice 1 of seed 3 is seed 4


def test_stop_sequences_end_the_text_before_them(client: openai.OpenAI) -> None:
    free = client.chat.completions.create(model="tiny", messages=CHAT, max_tokens=30, temperature=0)
    text = free.choices[0].message.content or ""
    stop = text[10:14]
    assert stop.strip(), text
    cut = client.chat.completions.create(
        model="tiny", messages=CHAT, max_tokens=30, temperature=0, stop=[stop, "never-appears"]
    )
    choice = cut.choices[0]
    assert choice.message.content == text[: text.index(stop)]
    assert choice.finish_reason == "stop"
    assert cut.usage is not None and cut.usage.completion_tokens < 30  # generation ended early


def test_logprobs_and_top_logprobs_are_honoured(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model="tiny", messages=CHAT, max_tokens=4, temperature=0, logprobs=True, top_logprobs=3
    )
    content = reply.choices[0].logprobs.content  # type: ignore[union-attr]
    assert content is not None and len(content) == 4
    for token in content:
        assert len(token.top_logprobs) == 3
        best = token.top_logprobs[0]
        assert (best.token, best.logprob) == (token.token, pytest.approx(token.logprob))  # greedy
        values = [t.logprob for t in token.top_logprobs]
        assert values == sorted(values, reverse=True)


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"top_p": 0.3}, "top_p"),
        ({"presence_penalty": 1.0}, "presence_penalty"),
        ({"tool_choice": "required"}, "tool_choice"),  # without tools
        (
            {"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "x"}}},
            "tool_choice",
        ),
        ({"response_format": {"type": "yaml"}}, "response_format"),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"schema": {"type": 5}}}},
            "response_format",
        ),
        (
            {"tools": TOOLS, "tool_choice": "required", "response_format": {"type": "json_object"}},
            "response_format",
        ),
        ({"top_logprobs": 2}, "top_logprobs"),  # without logprobs: true
    ],
)
def test_what_is_not_honoured_is_refused_by_name(
    client: openai.OpenAI, extra: dict, param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model="tiny", messages=CHAT, max_tokens=2, **extra)
    assert bad.value.body["param"] == param  # type: ignore[index]


def test_neutral_values_and_bookkeeping_fields_pass(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model="tiny", messages=CHAT, max_tokens=2, top_p=1, presence_penalty=0, user="me",
        tool_choice="none",
    )  # fmt: skip
    assert reply.choices[0].message.tool_calls is None


def test_streaming_and_async_clients(url: str, client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="tiny", messages=CHAT, max_tokens=6, temperature=0, stream=True
    )
    streamed = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    whole = client.chat.completions.create(model="tiny", messages=CHAT, max_tokens=6, temperature=0)
    assert streamed == whole.choices[0].message.content

    async def both() -> list[str]:
        aclient = openai.AsyncOpenAI(base_url=url, api_key="unused", max_retries=0)
        replies = await asyncio.gather(
            *(
                aclient.chat.completions.create(
                    model="tiny", messages=CHAT, max_tokens=6, temperature=0
                )
                for _ in range(2)
            )
        )
        return [r.choices[0].message.content or "" for r in replies]

    assert asyncio.run(both()) == [streamed, streamed]


def test_litellm_as_a_client(url: str, client: openai.OpenAI) -> None:
    reply = litellm.completion(
        model="openai/tiny", api_base=url, api_key="unused", messages=CHAT, max_tokens=4,
        temperature=0,
    )  # fmt: skip
    whole = client.chat.completions.create(model="tiny", messages=CHAT, max_tokens=4, temperature=0)
    assert reply.choices[0].message.content == whole.choices[0].message.content
    with pytest.raises(litellm.BadRequestError):
        litellm.completion(
            model="openai/tiny", api_base=url, api_key="unused", messages=CHAT, top_p=0.2,
            max_tokens=2,
        )  # fmt: skip


def test_text_completions_continue_a_prompt_or_its_token_ids(
    client: openai.OpenAI, tiny: object
) -> None:
    from rockroll.models.local import LocalModel

    assert isinstance(tiny, LocalModel)
    ids = tiny.tokenizer.encode("Once upon a time", add_special_tokens=False)
    local = tiny.continue_ids(ids, max_tokens=6, temperature=0)
    by_text = client.completions.create(
        model="tiny", prompt="Once upon a time", max_tokens=6, temperature=0
    )
    assert by_text.object == "text_completion"
    assert by_text.choices[0].text == local.message.content
    by_ids = client.completions.create(
        model="tiny", prompt=ids, max_tokens=6, temperature=0, logprobs=2
    )
    choice = by_ids.choices[0]
    assert choice.text == local.message.content
    assert choice.logprobs is not None and choice.logprobs.token_logprobs == pytest.approx(
        local.logprobs
    )
    assert all(len(top) <= 2 for top in choice.logprobs.top_logprobs or [])
    assert by_ids.usage is not None and by_ids.usage.prompt_tokens == len(ids)
    with pytest.raises(openai.BadRequestError) as bad:
        client.completions.create(model="tiny", prompt="x", max_tokens=2, echo=True)
    assert bad.value.body["param"] == "echo"  # type: ignore[index]


@pytest.mark.parametrize("stopped", [False, True])
def test_text_completions_stream_as_they_are_generated(
    url: str, client: openai.OpenAI, stopped: bool
) -> None:
    """Chunks of text as tokens come, then the finish reason, usage and rockroll's token ids;
    the joined chunks are the whole completion's text, a stop string cut as there."""
    asked = {"model": "tiny", "prompt": "Once upon a time", "max_tokens": 40, "temperature": 0}
    if stopped:  # a stop string from the middle of the free completion
        free = client.completions.create(**asked).choices[0].text
        asked["stop"] = free[len(free) // 2 : len(free) // 2 + 3]
    whole = client.completions.create(**asked)
    chunks = list(client.completions.create(**asked, stream=True))
    assert all(c.object == "text_completion" for c in chunks)
    assert len(chunks) > 3  # token by token, not one chunk at the end
    assert whole.choices[0].finish_reason == ("stop" if stopped else "length")
    assert "".join(c.choices[0].text for c in chunks) == whole.choices[0].text
    assert chunks[-1].choices[0].finish_reason == whole.choices[0].finish_reason
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == (
        whole.usage.completion_tokens if whole.usage else None
    )
    streamed = httpx.post(f"{url}/completions", json=asked | {"stream": True}).text
    last = json.loads(streamed.split("data: ")[-2])
    plain = httpx.post(f"{url}/completions", json=asked).json()
    assert last["choices"][0]["token_ids"] == plain["choices"][0]["token_ids"]
    assert last["prompt_token_ids"] == plain["prompt_token_ids"]
    with pytest.raises(openai.BadRequestError) as bad:
        client.completions.create(model="tiny", prompt="x", max_tokens=2, n=2, stream=True)
    assert bad.value.body["param"] == "n"  # type: ignore[index]
