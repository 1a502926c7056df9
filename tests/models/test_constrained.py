"""Replies held to a shape by a grammar: `response_format` and `tool_choice` required or named,
through the official `openai` SDK. The model is a tiny random one, which left to itself never
writes JSON, so every reply that parses is the grammar's doing."""

from __future__ import annotations

import json
import math

import openai
import pytest

pytest.importorskip("llguidance")

from rockroll.models.constraints import Constraint, json_grammar
from rockroll.models.generation import Decoding, Row
from rockroll.models.local import LocalModel

CHAT = [{"role": "user", "content": "describe the weather"}]
SCHEMA = {
    "type": "object",
    "properties": {
        "sky": {"enum": ["clear", "cloudy", "rain"]},
        "wind": {"type": "boolean"},
        "note": {"type": "string", "maxLength": 12},
    },
    "required": ["sky", "wind", "note"],
    "additionalProperties": False,
}
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "bash",
            "parameters": {
                "type": "object",
                "properties": {"command": {"type": "string", "maxLength": 16}},
                "required": ["command"],
                "additionalProperties": False,
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "finish",
            "parameters": {
                "type": "object",
                "properties": {"ok": {"type": "boolean"}},
                "required": ["ok"],
                "additionalProperties": False,
            },
        },
    },
]


@pytest.fixture(scope="module")
def client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=120)


def _valid(reply: dict) -> bool:
    return (
        set(reply) == {"sky", "wind", "note"}
        and reply["sky"] in ("clear", "cloudy", "rain")
        and isinstance(reply["wind"], bool)
        and isinstance(reply["note"], str)
        and len(reply["note"]) <= 12
    )


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_json_schema_replies_match_the_schema(client: openai.OpenAI, temperature: float) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "weather", "schema": SCHEMA}}
    reply = client.chat.completions.create(
        model="tiny", messages=CHAT, max_tokens=80, temperature=temperature, n=4, seed=3,
        response_format=fmt, logprobs=True,  # type: ignore[arg-type]
    )  # fmt: skip
    for choice in reply.choices:
        assert choice.finish_reason == "stop"
        assert _valid(json.loads(choice.message.content or ""))
        assert choice.logprobs is not None and choice.logprobs.content
        assert all(math.isfinite(t.logprob) for t in choice.logprobs.content)


def test_without_the_grammar_the_model_writes_no_json(client: openai.OpenAI) -> None:
    """The control: the same request unconstrained gives text that does not parse."""
    reply = client.chat.completions.create(model="tiny", messages=CHAT, max_tokens=30, seed=3)
    with pytest.raises(json.JSONDecodeError):
        json.loads(reply.choices[0].message.content or "")


def test_json_object_starts_an_object(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model="tiny", messages=CHAT, max_tokens=60, temperature=0,
        response_format={"type": "json_object"},
    )  # fmt: skip
    text = reply.choices[0].message.content or ""
    assert text.startswith("{")
    if reply.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(text), dict)


@pytest.mark.parametrize("choice", ["required", "bash", "finish"])
def test_tool_choice_forces_a_valid_call(client: openai.OpenAI, choice: str) -> None:
    forced = choice if choice == "required" else {"type": "function", "function": {"name": choice}}
    reply = client.chat.completions.create(
        model="tiny", messages=CHAT, max_tokens=80, temperature=1.0, seed=11, tools=TOOLS,
        tool_choice=forced,  # type: ignore[arg-type]
    )  # fmt: skip
    result = reply.choices[0]
    assert result.finish_reason == "tool_calls"
    [call] = result.message.tool_calls or []
    arguments = json.loads(call.function.arguments)  # type: ignore[union-attr]
    name = call.function.name  # type: ignore[union-attr]
    assert name in ("bash", "finish") and (choice == "required" or name == choice)
    if name == "bash":
        assert set(arguments) == {"command"} and len(arguments["command"]) <= 16
    else:
        assert set(arguments) == {"ok"} and isinstance(arguments["ok"], bool)


def test_a_streamed_forced_call_arrives_whole(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="tiny", messages=CHAT, max_tokens=80, tools=TOOLS, stream=True,
        tool_choice={"type": "function", "function": {"name": "finish"}},
    )  # fmt: skip
    calls = [
        c for chunk in stream if chunk.choices for c in chunk.choices[0].delta.tool_calls or []
    ]
    assert [c.function.name for c in calls] == ["finish"]  # type: ignore[union-attr]


def test_rows_with_and_without_a_grammar_share_a_batch(tiny: LocalModel) -> None:
    prompt = tiny.tokenizer.encode("weather?")
    grammar = json_grammar(SCHEMA)
    free = Row(prompt, 30, 1.0, 5)
    held = Row(
        prompt,
        80,
        1.0,
        5,
        constraint=Constraint(tiny.tokenizer, grammar, tiny.model.config.vocab_size),
    )
    decoding = Decoding(tiny.model, tiny.stop_ids)
    decoding.admit([free, held])
    while decoding.rows:
        decoding.step()
    assert held.stopped and _valid(
        json.loads(tiny.tokenizer.decode(held.tokens, skip_special_tokens=True))
    )
    assert free.tokens != held.tokens[: len(free.tokens)]
