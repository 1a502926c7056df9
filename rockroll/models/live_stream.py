"""Server-sent events as tokens come: a chat completion streamed while it is generated.

`live_events(run, ...)` starts `run(on_token, cancelled)` (the completion, returning the response
body) on a thread of its own and yields OpenAI `chat.completion.chunk` events (or, for
`/v1/completions`, `text_completion` ones with `text` deltas): the role, then the
text as it grows (a token that ends inside a UTF-8 character waits for the next; text that could
still turn out to begin a stop string waits until it cannot), then what only the end knows (the
tool calls, the finish reason, the usage, and rockroll's token ids and logprobs), then [DONE].
When the client goes away, the generator is closed and the generation is cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

Run = Callable[[Callable[[int], None], Callable[[], bool]], dict]

log = logging.getLogger("rockroll.serve")
_END = object()


async def live_events(
    run: Run, tokenizer: Any, base: dict, stops: tuple[str, ...], text: bool = False
) -> AsyncIterator[str]:
    """The events of one streamed choice; `base` holds the chunks' id, created and model.
    With `text`, those of a text completion (`/v1/completions`: `text` deltas, no role).

    An async generator, so that the server's cancelling it (the client went away) reaches the
    `finally` below at once, wherever it waits."""
    loop = asyncio.get_running_loop()
    tokens: asyncio.Queue[Any] = asyncio.Queue()
    cancel = threading.Event()
    outcome: dict[str, Any] = {}

    def put(item: Any) -> None:  # on the decoding thread: handed to the event loop
        loop.call_soon_threadsafe(tokens.put_nowait, item)

    def work() -> None:
        try:
            outcome["body"] = run(put, cancel.is_set)
        except Exception as exc:  # reported in the stream: the status line has gone out
            outcome["error"] = exc
        finally:
            with contextlib.suppress(RuntimeError):  # the loop closed: nobody is listening
                put(_END)

    threading.Thread(target=work, name="rockroll-stream", daemon=True).start()
    base = base | {"object": "text_completion" if text else "chat.completion.chunk"}
    hold = max((len(s) for s in stops), default=1) - 1
    ids: list[int] = []
    sent = ""
    finished = False
    try:
        if not text:
            yield _event(base, {"role": "assistant", "content": ""})
        while (token := await tokens.get()) is not _END:
            ids.append(token)
            so_far = tokenizer.decode(ids, skip_special_tokens=True)
            if so_far.endswith("\ufffd"):
                continue  # the rest of a character comes with the next token
            ready = so_far[: len(so_far) - hold] if stops else so_far
            if any(s in so_far for s in stops if s):
                continue  # a stop string: the final text (cut before it) goes out at the end
            if len(ready) > len(sent) and ready.startswith(sent):
                yield (
                    _text(base, ready[len(sent) :])
                    if text
                    else _event(base, {"content": ready[len(sent) :]})
                )
                sent = ready
        if "error" in outcome:
            message = f"the server failed: {type(outcome['error']).__name__}: {outcome['error']}"
            yield f"data: {json.dumps({'error': {'message': message, 'type': 'server_error'}})}\n\n"
            return
        ending = _text_ending if text else _ending
        for event in ending(base, outcome["body"], sent):
            yield event
        finished = True
    finally:
        if not finished:
            log.info("client went away: generation cancelled after %d tokens", len(ids))
        cancel.set()


def _ending(base: dict, body: dict, sent: str) -> Iterator[str]:
    choice = body["choices"][0]
    message = choice["message"]
    content = message.get("content") or ""
    delta: dict[str, Any] = {}
    if content.startswith(sent) and len(content) > len(sent):
        delta["content"] = content[len(sent) :]
    if "tool_calls" in message:
        delta["tool_calls"] = [{"index": i, **c} for i, c in enumerate(message["tool_calls"])]
    if delta:
        yield _event(base, delta)
    last = {
        "index": 0,
        "delta": {},
        "finish_reason": choice["finish_reason"],
        "logprobs": choice["logprobs"],
        "token_ids": choice["token_ids"],
    }
    extras = {"usage": body["usage"], "prompt_token_ids": body["prompt_token_ids"]}
    yield f"data: {json.dumps(base | {'choices': [last]} | extras)}\n\n"
    yield "data: [DONE]\n\n"


def _text_ending(base: dict, body: dict, sent: str) -> Iterator[str]:
    choice = body["choices"][0]
    rest = choice["text"][len(sent) :] if choice["text"].startswith(sent) else ""
    last = {k: choice[k] for k in ("index", "logprobs", "finish_reason", "token_ids")}
    extras = {"usage": body["usage"], "prompt_token_ids": body["prompt_token_ids"]}
    yield f"data: {json.dumps(base | {'choices': [last | {'text': rest}]} | extras)}\n\n"
    yield "data: [DONE]\n\n"


def _text(base: dict, delta: str) -> str:
    choice = {"index": 0, "text": delta, "logprobs": None, "finish_reason": None}
    return f"data: {json.dumps(base | {'choices': [choice]})}\n\n"


def _event(base: dict, delta: dict) -> str:
    choice = {"index": 0, "delta": delta, "finish_reason": None}
    return f"data: {json.dumps(base | {'choices': [choice]})}\n\n"
