"""An OpenAI-compatible chat-completions server in front of a local model.

`rockroll model serve` lets other harnesses (mini-swe-agent, Terminus, anything speaking the
OpenAI API) drive a local model, and lets training sit behind a plain HTTP endpoint. Every
response carries what a trainer needs beyond the OpenAI shape, as vLLM does: the prompt's token
ids (`prompt_token_ids`), the generated token ids (`choices[0].token_ids`) and their logprobs
(`choices[0].logprobs.content`, always filled). With `tools` in the request, valid `<tool_call>`
blocks come back as `tool_calls`; the message's `content` keeps the whole generated text, so a
conversation sent back renders to exactly the tokens the model produced.

Concurrent requests are decoded together: FastAPI runs each in a worker thread, and behind
`rockroll model serve` the local model batches continuously (requests join the batch in flight
between decoding steps and leave it when they end: a short request is answered while long ones
go on), each row with its own seed and temperature, so a seeded request gets the tokens it
would get alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

import anyio.to_thread
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from rockroll.errors import ModelError, RockrollError
from rockroll.models import constraints, parse_arguments
from rockroll.models.live_stream import live_events
from rockroll.models.messages import Completion, Message, ToolCall
from rockroll.models.request_log import RequestLog
from rockroll.models.serve_requests import ChatRequest, TextRequest

DEFAULT_MAX_TOKENS = 512
log = logging.getLogger("rockroll.serve")


class ServeError(RockrollError):
    """A request the server refuses, with the HTTP status and OpenAI error fields."""

    def __init__(self, status: int, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.param = param


def _answer_errors_as_openai(app: FastAPI) -> None:
    """Every error, unknown routes and methods included, in OpenAI's error body."""

    @app.exception_handler(ServeError)
    async def _serve_error(_: Request, exc: ServeError) -> JSONResponse:
        return _error(exc.status, str(exc), exc.param)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return _error(400, f"invalid request: {where or 'body'}: {first.get('msg')}", where)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            message = f"no route {request.method} {request.url.path}; see /v1/models"
        elif exc.status_code == 405:
            message = f"{request.url.path} does not take {request.method}"
        else:
            message = str(exc.detail)
        return _error(exc.status_code, message)

    @app.exception_handler(Exception)
    async def _crash(_: Request, exc: Exception) -> JSONResponse:
        return _error(500, f"the server failed: {type(exc).__name__}: {exc}")


def create_app(model: Any, served_name: str) -> FastAPI:
    """The FastAPI app serving `model` (a LocalModel) under the model name `served_name`."""

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> Any:
        yield
        log.info("stopping: new requests are refused, those running finish or are dropped")

    app = FastAPI(title="rockroll model server", version="1", lifespan=lifespan)

    _answer_errors_as_openai(app)
    app.add_middleware(RequestLog)

    entry = {"id": served_name, "object": "model", "created": 0, "owned_by": "rockroll"}
    entry |= {"max_model_len": model.context_window}

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok", "model": served_name}

    @app.get("/v1/models")
    def models() -> dict:
        return {"object": "list", "data": [entry]}

    def served(name: str, param: str | None = None) -> None:
        if name != served_name:
            raise ServeError(404, f"model {name!r} is not served here; use {served_name!r}", param)

    @app.get("/v1/models/{name:path}")
    def one_model(name: str) -> dict:
        served(name)
        return entry

    @app.post("/v1/completions", response_model=None)
    async def text(request: TextRequest) -> dict | StreamingResponse:
        served(request.model, "model")
        run = _continuation(model, served_name, request)  # refusals before any byte
        if request.stream:
            base = {"id": f"cmpl-{uuid.uuid4().hex}", "created": int(time.time())}
            base |= {"model": served_name}
            events = live_events(run, model.tokenizer, base, request.stops(), text=True)
            return StreamingResponse(events, media_type="text/event-stream")
        return await anyio.to_thread.run_sync(lambda: run(lambda _: None, lambda: False))

    @app.post("/v1/chat/completions", response_model=None)
    async def chat(request: ChatRequest, raw: Request) -> dict | StreamingResponse:
        served(request.model, "model")
        job = _Job(model, served_name, request)  # a bad request is refused here, before any byte
        if request.stream and request.n == 1:
            base = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time())}
            events = live_events(job.run, model.tokenizer, base | {"model": served_name},
                                 request.stops())  # fmt: skip
            return StreamingResponse(events, media_type="text/event-stream")
        cancel = threading.Event()
        work = asyncio.ensure_future(
            anyio.to_thread.run_sync(lambda: job.run(lambda _: None, cancel.is_set))
        )
        while not work.done():  # a client that goes away cancels its generation
            await asyncio.wait({work}, timeout=0.25)
            if not work.done() and await raw.is_disconnected():
                cancel.set()
                log.info("client went away: generation cancelled")
        body = await work
        if request.stream:
            return StreamingResponse(_stream(body), media_type="text/event-stream")
        return body

    return app


class _Job:
    """One request, checked (a refusal raises ServeError at once), ready to `run`."""

    def __init__(self, model: Any, served_name: str, request: ChatRequest) -> None:
        if field := request.unsupported():
            raise ServeError(400, f"unsupported parameter: {field}", field)
        self.model, self.served_name, self.request = model, served_name, request
        self.tools, self.grammar = _tools_for(request)
        if (shape := _format_grammar(request.response_format)) and self.grammar:
            raise ServeError(
                400, "response_format and a forced tool_choice cannot both shape the reply",
                "response_format",
            )  # fmt: skip
        self.grammar = self.grammar or shape
        self.messages = [_message(m, i) for i, m in enumerate(request.messages)]
        self.max_tokens = request.max_completion_tokens or request.max_tokens or DEFAULT_MAX_TOKENS
        self.top = request.top_logprobs or 0
        if self.top and not request.logprobs:
            raise ServeError(400, "top_logprobs needs logprobs: true", "top_logprobs")

    def run(self, on_token: Callable[[int], None], cancelled: Callable[[], bool]) -> dict:
        """The response body: the request's `n` choices (decoded in one batch)."""
        request = self.request

        def one(i: int) -> Completion:
            return self.model.complete(
                self.messages,
                self.tools,
                max_tokens=self.max_tokens,
                temperature=request.temperature,
                seed=None if request.seed is None else request.seed + i,
                stop=request.stops(),
                top_logprobs=self.top,
                on_token=on_token if request.n == 1 else None,
                cancelled=cancelled,
                grammar=self.grammar,
            )

        completions = _choices(request.n, one, "messages")
        return _response(completions, self.served_name, self.model.tokenizer)


def _tools_for(request: ChatRequest) -> tuple[list[dict[str, Any]] | None, str | None]:
    """The tools the model is offered (none with tool_choice "none"), and the grammar of the
    call it must make ("required": one of them; a named function: that one)."""
    choice, tools = request.tool_choice, request.tools or None
    if choice in (None, "auto", "none"):
        return (None if choice == "none" else tools), None
    if not tools:
        raise ServeError(400, f"tool_choice {json.dumps(choice)} needs tools", "tool_choice")
    if choice == "required":
        return tools, _checked(constraints.tool_call_grammar(tools), "tools")
    name = choice.get("function", {}).get("name") if isinstance(choice, dict) else None
    if not isinstance(choice, dict) or choice.get("type") != "function" or not name:
        raise ServeError(
            400,
            f"tool_choice {json.dumps(choice)} is not one of 'auto', 'none', 'required' or "
            '{"type": "function", "function": {"name": NAME}}',
            "tool_choice",
        )
    if name not in {t.get("function", t).get("name") for t in tools}:
        raise ServeError(400, f"tool_choice names {name!r}, which is not in tools", "tool_choice")
    return tools, _checked(constraints.tool_call_grammar(tools, name), "tools")


def _checked(grammar: str, param: str) -> str:
    if problem := constraints.check(grammar):
        raise ServeError(400, f"{param}: the schema cannot be followed: {problem}", param)
    return grammar


def _format_grammar(response_format: dict[str, Any] | None) -> str | None:
    """The grammar of a `response_format` (None for plain text)."""
    kind = (response_format or {}).get("type", "text")
    if kind == "text":
        return None
    if kind == "json_object":
        return constraints.json_grammar()
    spec = (response_format or {}).get("json_schema")
    if kind != "json_schema" or not isinstance(spec, dict):
        raise ServeError(
            400,
            'response_format must be {"type": "text"}, {"type": "json_object"} or '
            '{"type": "json_schema", "json_schema": {"name": ..., "schema": {...}}}',
            "response_format",
        )
    schema = spec.get("schema") or {"type": "object"}
    if not isinstance(schema, dict):
        raise ServeError(
            400, "response_format.json_schema.schema is not an object", "response_format"
        )
    return _checked(constraints.json_grammar(schema), "response_format")


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
    role = raw.get("role")
    if role == "developer":  # OpenAI's newer name for the system message
        role = "system"
    try:
        return Message(
            role=role,  # type: ignore[arg-type]
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


def _choices(n: int, one: Callable[[int], Completion], param: str) -> list[Completion]:
    """`one(i)` for each of `n` choices, at once when several (the model decodes them in one
    batch); a request the model refuses is a 400 naming `param`."""
    try:
        if n == 1:
            return [one(0)]
        with ThreadPoolExecutor(n) as pool:
            return list(pool.map(one, range(n)))
    except ModelError as exc:
        raise ServeError(400, str(exc), param) from exc


def _body(kind: str, served_name: str, completions: list[Completion], choices: list) -> dict:
    """A response body of `kind` ("chat.completion", "text_completion") with its usage, and
    rockroll's prompt token ids."""
    prompt = completions[0].prompt_tokens or 0
    produced = sum(c.completion_tokens or 0 for c in completions)
    return {
        "id": f"{'chatcmpl' if kind == 'chat.completion' else 'cmpl'}-{uuid.uuid4().hex}",
        "object": kind,
        "created": int(time.time()),
        "model": served_name,
        "choices": choices,
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": produced,
            "total_tokens": prompt + produced,
        },
        "prompt_token_ids": completions[0].prompt_token_ids or [],
    }


def _response(completions: list[Completion], served_name: str, tokenizer: Any) -> dict:
    choices = [_choice(i, c, tokenizer) for i, c in enumerate(completions)]
    return _body("chat.completion", served_name, completions, choices)


def _choice(index: int, completion: Completion, tokenizer: Any) -> dict:
    """One choice; tool calls get ids unique across replies (the model numbers them call_1,
    call_2... in each reply, and the ids are not part of what it reads back)."""
    message = completion.message
    out: dict[str, Any] = {"role": "assistant", "content": message.content}
    if message.tool_calls:
        out["tool_calls"] = [
            {
                "id": f"call_{uuid.uuid4().hex[:24]}",
                "type": "function",
                "function": {"name": c.name, "arguments": json.dumps(c.arguments)},
            }
            for c in message.tool_calls
        ]
    ids = completion.token_ids or []
    tokens = tokenizer.convert_ids_to_tokens(ids) if ids else []
    tops = completion.top_logprobs or [[] for _ in ids]
    logprobs = [
        {"token": t, "logprob": lp, "bytes": list(t.encode()), "top_logprobs": _top(top, tokenizer)}
        for t, lp, top in zip(tokens, completion.logprobs or [], tops, strict=True)
    ]
    return {
        "index": index,
        "message": out,
        "finish_reason": completion.finish_reason,
        "logprobs": {"content": logprobs},
        "token_ids": ids,
    }


def _continuation(
    model: Any, served_name: str, request: TextRequest
) -> Callable[[Callable[[int], None], Callable[[], bool]], dict]:
    """A checked `/v1/completions` request, as `run(on_token, cancelled)` returning its body:
    `n` plain continuations of the prompt, in one batch (streamed: one)."""
    field = request.unsupported() or ("echo" if request.echo else None)
    if field := field or ("n" if request.stream and request.n > 1 else None):
        raise ServeError(400, f"unsupported parameter: {field}" + (
            " (with stream: true, one choice)" if field == "n" else ""), field)  # fmt: skip
    ids = request.prompt
    if isinstance(ids, str):
        ids = model.tokenizer.encode(ids, add_special_tokens=False)

    def run(on_token: Callable[[int], None], cancelled: Callable[[], bool]) -> dict:
        def one(i: int) -> Completion:
            return model.continue_ids(
                list(ids),
                max_tokens=request.max_tokens,
                temperature=request.temperature,
                seed=None if request.seed is None else request.seed + i,
                stop=request.stops(),
                top_logprobs=request.logprobs or 0,
                on_token=on_token if request.n == 1 else None,
                cancelled=cancelled,
            )

        done = _choices(request.n, one, "prompt")
        return _text_response(done, served_name, model.tokenizer, request.logprobs is not None)

    return run


def _text_response(
    done: list[Completion], served_name: str, tokenizer: Any, logprobs: bool
) -> dict:
    """The legacy completions body; rockroll's token ids ride along as in chat replies."""
    choices = []
    for i, c in enumerate(done):
        ids = c.token_ids or []
        choice: dict[str, Any] = {"index": i, "text": c.message.content, "logprobs": None}
        if logprobs:
            tokens = tokenizer.convert_ids_to_tokens(ids) if ids else []
            tops = c.top_logprobs or [[] for _ in ids]
            choice["logprobs"] = {
                "tokens": tokens,
                "token_logprobs": c.logprobs or [],
                "top_logprobs": [
                    {t["token"]: t["logprob"] for t in _top(top, tokenizer)} for top in tops
                ],
            }
        choices.append(choice | {"finish_reason": c.finish_reason, "token_ids": ids})
    return _body("text_completion", served_name, done, choices)


def _top(top: list[tuple[int, float]], tokenizer: Any) -> list[dict]:
    names = tokenizer.convert_ids_to_tokens([i for i, _ in top]) if top else []
    return [
        {"token": t, "logprob": lp, "bytes": list(t.encode())}
        for t, (_, lp) in zip(names, top, strict=True)
    ]


def _stream(body: dict) -> Iterator[str]:
    """The finished completion as server-sent events: one delta per choice, then each choice's
    finish (the last one with the usage) and [DONE].

    Generation is not interleaved with sending; streaming exists so streaming clients work.
    """
    base = {k: body[k] for k in ("id", "created", "model")} | {"object": "chat.completion.chunk"}
    for choice in body["choices"]:
        delta: dict[str, Any] = {"role": "assistant", "content": choice["message"]["content"]}
        if "tool_calls" in choice["message"]:
            delta["tool_calls"] = [
                {"index": i, **c} for i, c in enumerate(choice["message"]["tool_calls"])
            ]
        first = {
            "index": choice["index"],
            "delta": delta,
            "logprobs": choice["logprobs"],
            "finish_reason": None,
        }
        yield f"data: {json.dumps(base | {'choices': [first]})}\n\n"
    for i, choice in enumerate(body["choices"]):
        last = {"index": choice["index"], "delta": {}, "finish_reason": choice["finish_reason"]}
        usage = {"usage": body["usage"]} if i == len(body["choices"]) - 1 else {}
        yield f"data: {json.dumps(base | {'choices': [last]} | usage)}\n\n"
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
