"""Continuous batching: rows join a decoding batch in flight and get what they would alone."""

from __future__ import annotations

import threading
import time
from functools import partial

import openai
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from rockroll.models.generation import Decoding, Row, generate
from rockroll.models.local import LocalModel, tiny_random_model
from rockroll.models.messages import Message


@pytest.fixture(scope="module")
def prompts(tiny: LocalModel) -> list[list[int]]:
    texts = ["hi", "List the files in /root and say which is the largest.", "Fix the test."]
    chats = [[Message(role="user", content=t)] for t in texts]
    encoded = [tiny.encode(chat) for chat in chats]
    return [*encoded, encoded[1] + encoded[2], encoded[0][:2]]


def _max_diff(a: list[float], b: list[float]) -> float:
    return max((abs(x - y) for x, y in zip(a, b, strict=True)), default=0.0)


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_rows_admitted_between_steps_get_what_they_get_alone(
    tiny: LocalModel, prompts: list[list[int]], temperature: float
) -> None:
    """Newcomers shorter and longer than the running rows (either side is padded), rows that
    leave early (the padding they needed is cut), mixed temperatures in one batch."""
    decoding = Decoding(tiny.model, tiny.stop_ids)
    limits = [30, 7, 25, 12, 18]
    rows = [
        Row(p, n, temperature if i % 2 else 0.0, 100 + i)
        for i, (p, n) in enumerate(zip(prompts, limits, strict=True))
    ]
    widths = []
    for step in range(60):
        if step < len(rows) and step % 1 == 0:
            decoding.admit([rows[step]])  # one newcomer before each of the first steps
        widths.append(len(decoding.rows))
        decoding.step()
        if not decoding.rows and step >= len(rows):
            break
    assert max(widths) >= 3  # rows really were decoded together
    assert decoding.cache is None and not decoding.rows
    for row in rows:
        [alone] = generate(
            tiny.model, [row.prompt], max_tokens=row.limit, temperature=row.temperature,
            seeds=[row.seed], stop_ids=tiny.stop_ids,
        )  # fmt: skip
        assert (row.tokens, row.stopped) == (alone.token_ids, alone.stopped)
        assert _max_diff(row.logprobs, alone.logprobs) < 1e-4


def test_padding_no_row_needs_is_cut_away(tiny: LocalModel, prompts: list[list[int]]) -> None:
    decoding = Decoding(tiny.model, ())
    long, short = Row(prompts[3], 5), Row(prompts[0], 40)
    decoding.admit([long])
    decoding.admit([short])
    assert decoding.mask is not None  # the short prompt is padded to the long one
    while long in decoding.rows:
        decoding.step()
    # the long row left: the short one's cache is its own length again, and unmasked
    assert decoding.mask is None
    assert decoding.cache.get_seq_length() == len(prompts[0]) + len(short.tokens) - 1


def test_a_short_request_is_answered_while_a_long_one_decodes(prompts: list[list[int]]) -> None:
    model = tiny_random_model(seed=0)
    model.batch_continuously(max_batch=4)
    produced: list[int] = []
    long = threading.Thread(
        target=partial(model.continue_ids, prompts[1], max_tokens=1500, on_token=produced.append),
        daemon=True,
    )
    long.start()
    deadline = time.monotonic() + 60
    while len(produced) < 20:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    short = model.continue_ids(prompts[0], max_tokens=3)
    at_answer = len(produced)
    long.join(timeout=300)
    assert short.completion_tokens == 3
    assert 20 <= at_answer < 1500, at_answer  # the long one was still going
    [alone] = generate(model.model, [prompts[0]], max_tokens=3, stop_ids=model.stop_ids)
    assert short.token_ids == alone.token_ids


def test_server_answers_short_requests_during_a_long_stream(url: str) -> None:
    """Whole batches would answer the short request only once the long one ended."""
    client = openai.OpenAI(base_url=url, api_key="none", max_retries=0, timeout=120)
    chat = [{"role": "user", "content": "tell me a long story"}]
    chunks, took = 0, 0.0
    started = time.monotonic()
    with client.chat.completions.create(
        model="tiny",
        messages=chat,
        max_tokens=1900,
        stream=True,  # type: ignore[arg-type]
    ) as stream:
        for chunk in stream:
            chunks += 1
            if chunks == 5:
                asked = time.monotonic()
                short = client.chat.completions.create(
                    model="tiny",
                    messages=chat,
                    max_tokens=3,  # type: ignore[arg-type]
                )
                took = time.monotonic() - asked
                assert short.usage is not None and short.usage.completion_tokens == 3
            if chunk.choices and chunk.choices[0].finish_reason:
                assert chunk.choices[0].finish_reason == "length"
    whole = time.monotonic() - started
    assert took < whole / 2, (took, whole)  # whole batches: took ≈ whole
