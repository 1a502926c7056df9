"""The HTTP API of `rockroll serve`: sandboxes, exec, sessions, files, snapshots, tokens.

Every route but `/v1/health` and `/metrics` needs `Authorization: Bearer TOKEN`. Status codes
are real and every error has the body `{"error": {"code", "message", "field"}}`:

- 400 invalid_argument: a value the sandbox layer refuses (a path above `/`, a bad size).
- 401 unauthorized: no token, or one that is unknown or revoked.
- 403 forbidden: an admin-only route with a non-admin token; quota_exceeded: a token's quota.
- 404 not_found: no such sandbox, snapshot or session **of yours** (another owner's sandbox
  answers exactly as a missing one does, so ids cannot be probed).
- 409 conflict: the request clashes with the state (a snapshot still in use).
- 410 gone: the sandbox was deleted or lost; the message says why.
- 413 too_large: an upload over the server's limit.
- 422 validation_error: a body or query that does not fit the schema (unknown fields too);
  `field` names the offender.

Long commands have no request ceiling: `stream: true` answers at once with NDJSON lines
`{"stream": "stdout"|"stderr", "data": TEXT}` as output arrives, then one
`{"result": ExecResult}` (or `{"error": ErrorDetail}`).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import Annotated, Any

import anyio
from fastapi import Depends, FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.exceptions import HTTPException as StarletteHTTPException

from rockroll.sandbox.errors import (
    ExecError,
    ImageNotFound,
    InUse,
    InvalidArgument,
    QuotaExceeded,
    SandboxClosed,
    SandboxError,
    SandboxNotFound,
)
from rockroll.sandbox.spec import parse_size
from rockroll.service.models import (
    CreateSandbox,
    ErrorBody,
    ExecRequest,
    ExecResult,
    FileInfo,
    ForkRequest,
    Health,
    SandboxInfo,
    SandboxList,
    SessionInfo,
    SessionRequest,
    SessionRun,
    SnapshotInfo,
    TokenInfo,
    TokenRequest,
)
from rockroll.service.pool import Gone, Pool
from rockroll.service.store import Store, Token

VERSION = "1"
MAX_UPLOAD = 256 << 20
THREADS = 512  # worker threads for blocking handlers: one per concurrent exec


class ApiError(Exception):
    """A refusal with its HTTP status and error code."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.field = status, code, field


_STATUS: list[tuple[type[Exception], int, str]] = [
    (QuotaExceeded, 403, "quota_exceeded"),
    (SandboxNotFound, 404, "not_found"),
    (Gone, 410, "gone"),
    (SandboxClosed, 410, "gone"),
    (InvalidArgument, 400, "invalid_argument"),
    (ExecError, 400, "exec_error"),
    (ImageNotFound, 404, "image_not_found"),
    (FileNotFoundError, 404, "no_such_file"),
    (IsADirectoryError, 400, "is_a_directory"),
    (NotADirectoryError, 400, "not_a_directory"),
    (PermissionError, 403, "forbidden"),
    (InUse, 409, "conflict"),
]
ERRORS = {
    code: {"model": ErrorBody, "description": what}
    for code, what in {
        400: "a value the sandbox refuses",
        401: "no token, or an unknown or revoked one",
        403: "admin-only route, or a quota reached",
        404: "no such resource of yours",
        410: "the sandbox was deleted or lost (the message says why)",
        422: "the request does not fit the schema",
    }.items()
}


def error_response(status: int, code: str, message: str, field: str | None = None) -> JSONResponse:
    body = {"error": {"code": code, "message": message, "field": field}}
    return JSONResponse(body, status_code=status)


async def caller(request: Request) -> Token:
    """The token of the request's `Authorization: Bearer` header, or a 401."""
    header = request.headers.get("authorization", "")
    scheme, _, secret = header.partition(" ")
    if not header:
        raise ApiError(
            401,
            "unauthorized",
            "send `Authorization: Bearer TOKEN`; create a token with `rockroll token create`",
        )
    if scheme.lower() != "bearer" or not secret.strip():
        raise ApiError(401, "unauthorized", "the Authorization header must be `Bearer TOKEN`")
    token = request.app.state.tokens.get(secret.strip())
    if token is None:
        raise ApiError(401, "unauthorized", "unknown or revoked token")
    return token


class TokenCache:
    """Token lookups remembered for `ttl` seconds: one SQLite read per token and second at most,
    instead of one per request. A token revoked through the API stops working at once; one
    revoked with `rockroll token revoke` (another process) within `ttl` seconds."""

    def __init__(self, store: Store, ttl: float = 2.0) -> None:
        self.store, self.ttl = store, ttl
        self._seen: dict[str, tuple[Token | None, float]] = {}

    def get(self, secret: str) -> Token | None:
        now = time.monotonic()
        found = self._seen.get(secret)
        if found is not None and found[1] > now:
            return found[0]
        token = self.store.token_for(secret)
        if len(self._seen) > 10_000:
            self._seen.clear()
        self._seen[secret] = (token, now + self.ttl)
        return token

    def clear(self) -> None:
        self._seen.clear()


class MetricsMiddleware:
    """Counts and times every request by route template (a plain ASGI middleware: Starlette's
    `@app.middleware("http")` costs a task and a stream per request)."""

    def __init__(self, app: Any, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = 500

        async def sent(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sent)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            method = scope["method"]
            self.metrics.latency.labels(method, route).observe(time.perf_counter() - t0)
            self.metrics.requests.labels(method, route, str(status)).inc()


def admin(token: Annotated[Token, Depends(caller)]) -> Token:
    if not token.admin:
        raise ApiError(403, "forbidden", "this route needs an admin token")
    return token


Caller = Annotated[Token, Depends(caller)]
Admin = Annotated[Token, Depends(admin)]
PathQ = Annotated[str, Query(description="path inside the sandbox", min_length=1)]
_BINARY = {"schema": {"type": "string", "format": "binary"}}
RAW_BODY = {"requestBody": {"required": True, "content": {"application/octet-stream": _BINARY}}}
TAR_BODY = {"requestBody": {"required": True, "content": {"application/x-tar": _BINARY}}}
RAW_REPLY: dict = {200: {"content": {"application/octet-stream": _BINARY}}}
TAR_REPLY: dict = {200: {"content": {"application/x-tar": _BINARY}}}
NDJSON_REPLY: dict = {
    200: {
        "description": "the ExecResult, or with `stream: true` NDJSON lines "
        '`{"stream", "data"}` then `{"result": ExecResult}` or `{"error": ErrorDetail}`',
        "content": {"application/x-ndjson": {"schema": {"type": "string"}}},
    }
}


class Metrics:
    """Prometheus series of one app (a registry of its own, so tests can run many apps)."""

    def __init__(self, pool: Pool) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "rockroll_http_requests",
            "HTTP requests by route and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "rockroll_http_request_seconds",
            "time to the response's start, by route",
            ["method", "route"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5, 30),
            registry=self.registry,
        )
        self.execs = Counter(
            "rockroll_exec_commands", "commands run through the API", registry=self.registry
        )
        live = Gauge("rockroll_sandboxes_live", "live sandboxes", registry=self.registry)
        live.set_function(pool.live_count)


def create_app(pool: Pool, *, max_upload: int = MAX_UPLOAD) -> FastAPI:
    """The API over `pool` (and its store); `rockroll serve` runs it under uvicorn."""
    store: Store = pool.store
    started = time.time()
    metrics = Metrics(pool)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        anyio.to_thread.current_default_thread_limiter().total_tokens = THREADS
        yield

    app = FastAPI(
        title="rockroll sandbox service",
        version=VERSION,
        description=__doc__,
        lifespan=lifespan,
        responses=ERRORS,  # type: ignore[arg-type]
    )
    app.state.store = store
    app.state.tokens = TokenCache(store)

    app.add_middleware(MetricsMiddleware, metrics=metrics)

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.code, str(exc), exc.field)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        loc = [str(p) for p in first.get("loc", ())]
        field = ".".join(loc[1:] if loc and loc[0] in ("body", "query", "path") else loc)
        if first.get("type") == "json_invalid":
            return error_response(400, "invalid_json", f"the body is not JSON: {first['msg']}")
        message = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'][1:]) or 'body'}: {e['msg']}" for e in exc.errors()
        )
        return error_response(422, "validation_error", message, field or None)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error_response(exc.status_code, code, str(exc.detail))

    async def _known(_: Request, exc: Exception) -> JSONResponse:
        for kind, status, code in _STATUS:
            if isinstance(exc, kind):
                return error_response(status, code, str(exc))
        return error_response(500, "internal", f"{type(exc).__name__}: {exc}")

    for kind in (SandboxError, OSError, Exception):  # Exception: a bug's 500 keeps the body
        app.add_exception_handler(kind, _known)

    # -- health and metrics --------------------------------------------------------------------
    @app.get("/v1/health", response_model=Health, tags=["service"])
    def health() -> Health:
        return Health(
            status="ok", version=VERSION, sandboxes=pool.live_count(), uptime=time.time() - started
        )

    @app.get("/metrics", tags=["service"], response_class=Response)
    def prometheus() -> Response:
        """Prometheus text format: requests, latencies, commands, live sandboxes."""
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    # -- sandboxes -----------------------------------------------------------------------------
    @app.post("/v1/sandboxes", status_code=201, response_model=SandboxInfo, tags=["sandboxes"])
    def create_sandbox(req: CreateSandbox, who: Caller) -> SandboxInfo:
        return pool.create(who, req)

    @app.get("/v1/sandboxes", response_model=SandboxList, tags=["sandboxes"])
    def list_sandboxes(
        who: Caller,
        status: Annotated[str, Query(pattern="^(live|creating|running|deleted|lost)$")] = "live",
        label: Annotated[list[str] | None, Query(description="KEY=VALUE, repeatable")] = None,
    ) -> SandboxList:
        wanted = {}
        for item in label or []:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise ApiError(422, "validation_error", f"label {item!r} is not KEY=VALUE", "label")
            wanted[key] = value
        return SandboxList(sandboxes=pool.list(who, status=status, labels=wanted))

    @app.get("/v1/sandboxes/{sandbox_id}", response_model=SandboxInfo, tags=["sandboxes"])
    def get_sandbox(sandbox_id: str, who: Caller) -> SandboxInfo:
        return pool.info(who, sandbox_id)

    @app.delete("/v1/sandboxes/{sandbox_id}", status_code=204, tags=["sandboxes"])
    def delete_sandbox(sandbox_id: str, who: Caller) -> Response:
        pool.delete(who, sandbox_id)
        return Response(status_code=204)

    @app.get("/v1/sandboxes/{sandbox_id}/audit", tags=["sandboxes"])
    def audit(sandbox_id: str, who: Caller) -> list[dict]:
        """Every command run in the sandbox: time, command, exit code, duration."""
        return pool.get(who, sandbox_id).audit_log()

    # -- commands ------------------------------------------------------------------------------
    @app.post(
        "/v1/sandboxes/{sandbox_id}/exec",
        response_model=ExecResult,
        responses=NDJSON_REPLY,
        tags=["commands"],
    )
    def execute(sandbox_id: str, req: ExecRequest, who: Caller) -> Response:
        sandbox = pool.get(who, sandbox_id)
        metrics.execs.inc()
        kwargs = {"timeout": req.timeout, "cwd": req.cwd, "env": req.env, "stdin": req.stdin}
        if not req.stream:
            result = sandbox.exec(req.cmd, **kwargs)
            return Response(result.model_dump_json(), media_type="application/json")
        return StreamingResponse(
            _ndjson(sandbox.stream(req.cmd, **kwargs)), media_type="application/x-ndjson"
        )

    @app.post("/v1/sandboxes/{sandbox_id}/sessions", status_code=201, tags=["commands"])
    def open_session(sandbox_id: str, req: SessionRequest, who: Caller) -> SessionInfo:
        """A persistent bash: `cd`, exports and background jobs survive between commands."""
        return SessionInfo(
            id=pool.open_session(who, sandbox_id, req.cwd, req.env), sandbox=sandbox_id
        )

    @app.post("/v1/sessions/{session_id}/run", response_model=ExecResult, tags=["commands"])
    def session_run(session_id: str, req: SessionRun, who: Caller) -> ExecResult:
        metrics.execs.inc()
        return pool.session(who, session_id).run(req.cmd, timeout=req.timeout)

    @app.delete("/v1/sessions/{session_id}", status_code=204, tags=["commands"])
    def close_session(session_id: str, who: Caller) -> Response:
        pool.close_session(who, session_id)
        return Response(status_code=204)

    # -- files ---------------------------------------------------------------------------------
    @app.get(
        "/v1/sandboxes/{sandbox_id}/files",
        tags=["files"],
        response_class=Response,
        responses=RAW_REPLY,
    )
    def read_file(sandbox_id: str, path: PathQ, who: Caller) -> Response:
        """The file's bytes (application/octet-stream)."""
        data = pool.get(who, sandbox_id).read_bytes(path)
        return Response(data, media_type="application/octet-stream")

    @app.put(
        "/v1/sandboxes/{sandbox_id}/files",
        status_code=204,
        tags=["files"],
        openapi_extra=RAW_BODY,
        responses={413: ERRORS[400] | {"description": "over the upload limit"}},
    )
    async def write_file(
        sandbox_id: str,
        path: PathQ,
        request: Request,
        who: Caller,
        mode: Annotated[str, Query(pattern="^0?[0-7]{3,4}$")] = "0644",
    ) -> Response:
        """Write the request body to `path`, creating parent directories."""
        data = await _body(request, max_upload)
        sandbox = await run_in_threadpool(pool.get, who, sandbox_id)
        await run_in_threadpool(sandbox.write_bytes, path, data, int(mode, 8))
        return Response(status_code=204)

    @app.get("/v1/sandboxes/{sandbox_id}/dir", response_model=list[FileInfo], tags=["files"])
    def list_dir(sandbox_id: str, path: PathQ, who: Caller) -> list[FileInfo]:
        return pool.get(who, sandbox_id).list_dir(path)

    @app.get("/v1/sandboxes/{sandbox_id}/stat", tags=["files"])
    def stat(sandbox_id: str, path: PathQ, who: Caller) -> dict[str, bool]:
        """Whether `path` exists, and whether it is a directory."""
        sandbox = pool.get(who, sandbox_id)
        found = sandbox.exists(path)
        return {"exists": found, "is_dir": found and sandbox.is_dir(path)}

    @app.get(
        "/v1/sandboxes/{sandbox_id}/tree",
        tags=["files"],
        response_class=Response,
        responses=TAR_REPLY,
    )
    def read_tree(sandbox_id: str, path: PathQ, who: Caller) -> Response:
        """A directory's contents as an uncompressed tar archive (application/x-tar)."""
        sandbox = pool.get(who, sandbox_id)
        if not sandbox.is_dir(path):
            raise ApiError(400, "invalid_argument", f"{path!r} is not a directory", "path")
        return Response(sandbox.read_tree(path), media_type="application/x-tar")

    @app.put(
        "/v1/sandboxes/{sandbox_id}/tree",
        status_code=204,
        tags=["files"],
        openapi_extra=TAR_BODY,
        responses={413: ERRORS[400] | {"description": "over the upload limit"}},
    )
    async def write_tree(sandbox_id: str, path: PathQ, request: Request, who: Caller) -> Response:
        """Unpack the tar archive in the body into the directory `path` (created if missing)."""
        data = await _body(request, max_upload)
        sandbox = await run_in_threadpool(pool.get, who, sandbox_id)
        await run_in_threadpool(sandbox.write_tree, path, data)
        return Response(status_code=204)

    # -- snapshots -----------------------------------------------------------------------------
    @app.post(
        "/v1/sandboxes/{sandbox_id}/snapshots",
        status_code=201,
        response_model=SnapshotInfo,
        tags=["snapshots"],
    )
    def snapshot(sandbox_id: str, who: Caller) -> SnapshotInfo:
        snap_id, created = pool.snapshot(who, sandbox_id)
        return SnapshotInfo(id=snap_id, source=sandbox_id, created=created)

    @app.post(
        "/v1/snapshots/{snapshot_id}/fork",
        status_code=201,
        response_model=SandboxInfo,
        tags=["snapshots"],
    )
    def fork(snapshot_id: str, req: ForkRequest, who: Caller) -> SandboxInfo:
        return pool.fork(who, snapshot_id, req)

    @app.delete("/v1/snapshots/{snapshot_id}", status_code=204, tags=["snapshots"])
    def remove_snapshot(snapshot_id: str, who: Caller) -> Response:
        pool.remove_snapshot(who, snapshot_id)
        return Response(status_code=204)

    # -- tokens (admin) ------------------------------------------------------------------------
    @app.get("/v1/tokens", response_model=list[TokenInfo], tags=["tokens"])
    def list_tokens(_: Admin) -> list[TokenInfo]:
        return [TokenInfo(**vars(t)) for t in store.tokens()]

    @app.post("/v1/tokens", status_code=201, response_model=TokenInfo, tags=["tokens"])
    def create_token(req: TokenRequest, _: Admin) -> TokenInfo:
        memory = parse_size(req.max_memory, "max_memory") if req.max_memory is not None else None
        token, secret = store.create_token(
            req.name, admin=req.admin, max_sandboxes=req.max_sandboxes, max_memory=memory
        )
        return TokenInfo(**vars(token), secret=secret)

    @app.delete("/v1/tokens/{token_id}", status_code=204, tags=["tokens"])
    def revoke_token(token_id: str, _: Admin) -> Response:
        if not store.revoke_token(token_id):
            raise ApiError(404, "not_found", f"no live token {token_id!r}")
        app.state.tokens.clear()
        return Response(status_code=204)

    return app


async def _body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it passes `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "too_large", f"the upload is {declared} bytes; the limit is {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "too_large", f"the upload passed the {limit}-byte limit")
        chunks.append(chunk)
    return b"".join(chunks)


def _ndjson(chunks: Iterator[tuple[str, str]]) -> Iterator[bytes]:
    """Output lines as they arrive, then the result (or the error) as the last line."""
    try:
        while True:
            stream, text = next(chunks)
            yield (json.dumps({"stream": stream, "data": text}) + "\n").encode()
    except StopIteration as done:
        result: ExecResult = done.value
        yield (json.dumps({"result": result.model_dump()}) + "\n").encode()
    except SandboxError as exc:
        code = next((c for k, _, c in _STATUS if isinstance(exc, k)), "internal")
        yield (json.dumps({"error": {"code": code, "message": str(exc)}}) + "\n").encode()
