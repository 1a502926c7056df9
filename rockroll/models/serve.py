"""An OpenAI-compatible chat-completions server in front of a local model.

`rockroll model serve` lets other harnesses (mini-swe-agent, Terminus, anything speaking the
OpenAI API) drive a local model, and lets training sit behind a plain HTTP endpoint. Every
response carries what a trainer needs beyond the OpenAI shape, as vLLM does: the prompt's token
ids (`prompt_token_ids`), the generated token ids (`choices[0].token_ids`) and their logprobs
(`choices[0].logprobs.content`, always filled). With `tools` in the request, valid `<tool_call>`
blocks come back as `tool_calls`; the message's `content` keeps the whole generated text, so a
conversation sent back renders to exactly the tokens the model produced.

Concurrent requests are decoded together: FastAPI runs each in a worker thread and the local
model batches calls that arrive at once, each with its own seed, so a seeded request gets the
tokens it would get alone.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from rockroll.errors import ModelError, RockrollError
from rockroll.models import parse_arguments
from rockroll.models.messages import Completion, Message, ToolCall

DEFAULT_MAX_TOKENS = 512


class ServeError(RockrollError):
    """A request the server refuses, with the HTTP status and OpenAI error fields."""

    def __init__(self, status: int, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.param = param


class ChatRequest(BaseModel):
    """The part of the OpenAI chat-completions request this server honours.

    Unknown fields are accepted and ignored, as OpenAI-compatible servers do, so clients that
    send vendor extras keep working.
    """

    model_config = ConfigDict(extra="allow")

    model: str
    messages: list[dict[str, Any]] = Field(min_length=1)
    tools: list[dict[str, Any]] | None = None
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    seed: int | None = None
    n: int = Field(1, ge=1)
    stream: bool = False
    tool_choice: str | dict[str, Any] | None = None

    @field_validator("n")
    @classmethod
    def _one_choice(cls, v: int) -> int:
        if v != 1:
            raise ValueError("only n=1 is supported; send one request per sample")
        return v


def create_app(model: Any, served_name: str) -> FastAPI:
    """The FastAPI app serving `model` (a LocalModel) under the model name `served_name`."""
    app = FastAPI(title="rockroll model server", version="1")

    @app.exception_handler(ServeError)
    async def _serve_error(_: Request, exc: ServeError) -> JSONResponse:
        return _error(exc.status, str(exc), exc.param)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return _error(400, f"invalid request: {where or 'body'}: {first.get('msg')}", where)

    @app.exception_handler(Exception)
    async def _crash(_: Request, exc: Exception) -> JSONResponse:
        return _error(500, f"the server failed: {type(exc).__name__}: {exc}")

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok", "model": served_name}

    @app.get("/v1/models")
    def models() -> dict:
        entry = {"id": served_name, "object": "model", "created": 0, "owned_by": "rockroll"}
        return {"object": "list", "data": [entry | {"max_model_len": model.context_window}]}

    @app.post("/v1/chat/completions", response_model=None)
    def chat(request: ChatRequest) -> dict | StreamingResponse:
        if request.model != served_name:
            raise ServeError(
                404, f"model {request.model!r} is not served here; use {served_name!r}", "model"
            )
        if request.tool_choice not in (None, "auto"):
            raise ServeError(400, "only tool_choice 'auto' is supported", "tool_choice")
        messages = [_message(m, i) for i, m in enumerate(request.messages)]
        max_tokens = request.max_completion_tokens or request.max_tokens or DEFAULT_MAX_TOKENS
        try:
            completion = model.complete(
                messages,
                request.tools or None,
                max_tokens=max_tokens,
                temperature=request.temperature,
                seed=request.seed,
            )
        except ModelError as exc:
            raise ServeError(400, str(exc), "messages") from exc
        body = _response(completion, served_name, model.tokenizer)
        if request.stream:
            return StreamingResponse(_stream(body), media_type="text/event-stream")
        return body

    return app


def _message(raw: dict[str, Any], index: int) -> Message:
    """An OpenAI message as the loop's Message; text parts of list contents are joined."""
    content = raw.get("content")
    if isinstance(content, list):
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    calls = []
    for j, tc in enumerate(raw.get("tool_calls") or []):
        fn = (tc.get("function") or {}) if isinstance(tc, dict) else {}
        if not isinstance(fn, dict) or not fn.get("name"):
            raise ServeError(400, f"messages[{index}].tool_calls[{j}] has no function name")
        arguments = parse_arguments(fn.get("arguments"))
        if "__raw__" in arguments:
            raise ServeError(
                400, f"messages[{index}].tool_calls[{j}].function.arguments is not a JSON object"
            )
        calls.append(
            ToolCall(id=tc.get("id") or f"call_{j + 1}", name=fn["name"], arguments=arguments)
        )
    try:
        return Message(
            role=raw.get("role"),  # type: ignore[arg-type]
            content=content or "",
            tool_calls=calls,
            tool_call_id=raw.get("tool_call_id"),
            name=raw.get("name"),
        )
    except ValidationError as exc:
        problem = exc.errors()[0]
        field = ".".join(str(p) for p in problem["loc"])
        raise ServeError(
            400, f"messages[{index}].{field}: {problem['msg']}", f"messages[{index}]"
        ) from None


def _response(completion: Completion, served_name: str, tokenizer: Any) -> dict:
    message = completion.message
    out: dict[str, Any] = {"role": "assistant", "content": message.content}
    if message.tool_calls:
        out["tool_calls"] = [
            {
                "id": c.id,
                "type": "function",
                "function": {"name": c.name, "arguments": json.dumps(c.arguments)},
            }
            for c in message.tool_calls
        ]
    ids = completion.token_ids or []
    tokens = tokenizer.convert_ids_to_tokens(ids) if ids else []
    logprobs = [
        {"token": t, "logprob": lp, "bytes": list(t.encode()), "top_logprobs": []}
        for t, lp in zip(tokens, completion.logprobs or [], strict=True)
    ]
    prompt_tokens = completion.prompt_tokens or 0
    completion_tokens = completion.completion_tokens or 0
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": served_name,
        "choices": [
            {
                "index": 0,
                "message": out,
                "finish_reason": completion.finish_reason,
                "logprobs": {"content": logprobs},
                "token_ids": ids,
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
        "prompt_token_ids": completion.prompt_token_ids or [],
    }


def _stream(body: dict) -> Iterator[str]:
    """The finished completion as server-sent events: one delta, then the finish and [DONE].

    Generation is not interleaved with sending; streaming exists so streaming clients work.
    """
    choice = body["choices"][0]
    base = {k: body[k] for k in ("id", "created", "model")} | {"object": "chat.completion.chunk"}
    delta: dict[str, Any] = {"role": "assistant", "content": choice["message"]["content"]}
    if "tool_calls" in choice["message"]:
        delta["tool_calls"] = [
            {"index": i, **c} for i, c in enumerate(choice["message"]["tool_calls"])
        ]
    first = {"index": 0, "delta": delta, "logprobs": choice["logprobs"], "finish_reason": None}
    last = {"index": 0, "delta": {}, "finish_reason": choice["finish_reason"]}
    yield f"data: {json.dumps(base | {'choices': [first]})}\n\n"
    yield f"data: {json.dumps(base | {'choices': [last], 'usage': body['usage']})}\n\n"
    yield "data: [DONE]\n\n"


def _error(status: int, message: str, param: str | None = None) -> JSONResponse:
    kind: Literal["invalid_request_error", "not_found_error", "server_error"] = (
        "not_found_error"
        if status == 404
        else "server_error"
        if status >= 500
        else "invalid_request_error"
    )
    return JSONResponse(
        {"error": {"message": message, "type": kind, "param": param, "code": status}},
        status_code=status,
    )


@contextlib.contextmanager
def serve_in_thread(app: FastAPI, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Run `app` on a background thread for the block; yields its base URL (…/v1).

    Port 0 picks a free port. For tests and for a trainer that hosts its policy in-process.
    """
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="rockroll-model-serve", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise ModelError(f"the model server did not start on {host}:{port}")
        time.sleep(0.01)
    bound = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://{host}:{bound}/v1"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
