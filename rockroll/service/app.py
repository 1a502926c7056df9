"""The HTTP API of `rockroll serve`: sandboxes, exec, sessions, files, snapshots, tokens.

Every route but `/v1/health` needs `Authorization: Bearer TOKEN` (`/metrics` and the OpenAPI
documents too, unless the server runs with `--public-metrics`). Status codes are real and every
error has the body `{"error": {"code", "message", "field"}}`:

- 400 invalid_argument: a value the sandbox layer refuses (a path above `/`, a bad size).
- 401 unauthorized: no token, or one that is unknown or revoked.
- 403 forbidden: an admin-only route with a non-admin token, or a setting the token may not ask
  for (network "full"); quota_exceeded: a token's quota.
- 404 not_found: no such sandbox, snapshot or session **of yours** (another owner's sandbox
  answers exactly as a missing one does, so ids cannot be probed).
- 409 conflict: the request clashes with the state (a snapshot still in use).
- 410 gone: the sandbox was deleted or lost; the message says why.
- 413 too_large: an upload or body over the server's limit, a file or tree over the read
  limit (checked before anything is read).
- 422 validation_error: a body or query that does not fit the schema (unknown fields too);
  `field` names the offender.

Long commands have no request ceiling: `stream: true` answers at once with NDJSON lines
`{"stream": "stdout"|"stderr", "data": TEXT}` as output arrives, then one
`{"result": ExecResult}` (or `{"error": ErrorDetail}`). A client that stops reading stalls its
command (the output is not buffered without bound); one that disconnects kills it.

Fairness: each token runs at most `max_execs` blocking requests (commands, file transfers,
creates) at once; more wait, without holding a worker thread, so one tenant's flood leaves
other tenants and `/v1/health` unaffected.
"""

from __future__ import annotations

import contextlib
import functools
import json
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any, TypeVar

import anyio
import anyio.to_thread
from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.exceptions import HTTPException as StarletteHTTPException

from rockroll.sandbox.checks import check_timeout
from rockroll.sandbox.errors import (
    ExecError,
    ImageNotFound,
    InUse,
    InvalidArgument,
    QuotaExceeded,
    SandboxClosed,
    SandboxError,
    SandboxNotFound,
    TooLarge,
)
from rockroll.sandbox.files import MAX_READ
from rockroll.sandbox.spec import parse_size
from rockroll.sandbox.streams import OutputStream
from rockroll.sandbox.trees import MAX_TREE
from rockroll.service.models import (
    CreateSandbox,
    ErrorBody,
    ExecRequest,
    ExecResult,
    FileInfo,
    ForkRequest,
    Health,
    KillReport,
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
from rockroll.service.store import DEFAULT_LIMITS, Store, Token

VERSION = "1"
MAX_UPLOAD = 256 << 20
MAX_JSON = 16 << 20  # a JSON body (an exec's stdin is in it)
THREADS = 1024  # worker threads for blocking work, shared; each token gets max_execs of them
CHUNK = 1 << 20
T = TypeVar("T")


class ApiError(Exception):
    """A refusal with its HTTP status and error code."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.field = status, code, field


_STATUS: list[tuple[type[Exception], int, str]] = [
    (QuotaExceeded, 403, "quota_exceeded"),
    (TooLarge, 413, "too_large"),
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
        413: "a body over the server's limit, or a file or tree over the read limit",
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
    """Token lookups remembered until any token changes: each request reads one counter (the
    token generation, bumped by every create and revoke, from any process) instead of the
    token's row, so a token revoked with `rockroll token revoke` stops working at once."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._seen: dict[str, Token | None] = {}
        self._generation = -1

    def get(self, secret: str) -> Token | None:
        generation = self.store.token_generation()
        if generation != self._generation:
            self._seen, self._generation = {}, generation
        if secret in self._seen:
            return self._seen[secret]
        token = self.store.token_for(secret)
        if len(self._seen) > 10_000:
            self._seen.clear()
        self._seen[secret] = token
        return token

    def clear(self) -> None:
        self._seen.clear()


class Slots:
    """Per token, how many blocking requests may run at once (its max_execs); the waiting ones
    wait on the event loop, holding no thread. Control requests (delete, kill) have a few
    slots of their own, so that a token can always stop what it flooded the server with."""

    CONTROL = 8

    def __init__(self) -> None:
        self._limiters: dict[str, anyio.CapacityLimiter] = {}
        self._control: dict[str, anyio.CapacityLimiter] = {}
        self._lock = threading.Lock()
        self.threads = anyio.CapacityLimiter(THREADS)

    async def control(self, token: Token, func: Callable[..., T], *args: Any) -> T:
        """`func(*args)` on a worker thread, within the token's control slots."""
        with self._lock:
            limiter = self._control.get(token.id)
            if limiter is None:
                limiter = self._control[token.id] = anyio.CapacityLimiter(self.CONTROL)
        return await self._within(limiter, func, *args)

    def of(self, token: Token) -> anyio.CapacityLimiter:
        size = token.limit("max_execs")
        total = int(size) if size is not None else THREADS
        with self._lock:
            limiter = self._limiters.get(token.id)
            if limiter is None:
                limiter = self._limiters[token.id] = anyio.CapacityLimiter(total)
            elif limiter.total_tokens != total:
                limiter.total_tokens = total
            return limiter

    async def run(self, token: Token, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """`func(*args, **kwargs)` on a worker thread, within the token's share."""
        return await self._within(self.of(token), func, *args, **kwargs)

    async def _within(
        self, limiter: anyio.CapacityLimiter, func: Callable[..., T], *args: Any, **kwargs: Any
    ) -> T:
        async with limiter:
            call = functools.partial(func, *args, **kwargs)
            return await anyio.to_thread.run_sync(call, limiter=self.threads)


class BodyLimit:
    """Refuses request bodies over `limit` bytes (413) on every route but the uploads (which
    have their own limit), by Content-Length at once or as a chunked body passes it."""

    def __init__(self, app: Any, limit: int, exempt: tuple[str, ...]) -> None:
        self.app, self.limit, self.exempt = app, limit, exempt

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"].endswith(self.exempt):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            await _send_error(send, 413, "too_large", f"the body is over {self.limit} bytes")
            return
        seen = 0

        async def counted() -> dict:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _BodyTooLarge
            return message

        try:
            await self.app(scope, counted, send)
        except _BodyTooLarge:
            await _send_error(send, 413, "too_large", f"the body passed {self.limit} bytes")


class _BodyTooLarge(Exception):
    pass


async def _send_error(send: Any, status: int, code: str, message: str) -> None:
    body = json.dumps({"error": {"code": code, "message": message, "field": None}}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


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


def create_app(
    pool: Pool,
    *,
    max_upload: int = MAX_UPLOAD,
    max_download: int = MAX_READ,
    max_tree: int = MAX_TREE,
    public_metrics: bool = False,
) -> FastAPI:
    """The API over `pool` (and its store); `rockroll serve` runs it under uvicorn."""
    store: Store = pool.store
    started = time.time()
    metrics = Metrics(pool)
    slots = Slots()

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield

    app = FastAPI(
        title="rockroll sandbox service",
        version=VERSION,
        description=__doc__,
        lifespan=lifespan,
        responses=ERRORS,  # type: ignore[arg-type]
        openapi_url="/openapi.json" if public_metrics else None,
        docs_url="/docs" if public_metrics else None,
        redoc_url=None,
    )
    app.state.store = store
    app.state.tokens = TokenCache(store)

    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.add_middleware(BodyLimit, limit=MAX_JSON, exempt=("/files", "/tree"))

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
        return error_response(*_error_of(exc))

    for kind in (SandboxError, OSError, Exception):  # Exception: a bug's 500 keeps the body
        app.add_exception_handler(kind, _known)

    # -- health, metrics, documents ------------------------------------------------------------
    @app.get("/v1/health", response_model=Health, tags=["service"])
    async def health() -> Health:
        return Health(
            status="ok", version=VERSION, sandboxes=pool.live_count(), uptime=time.time() - started
        )

    async def _metrics() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    if public_metrics:
        app.get("/metrics", tags=["service"], response_class=Response)(_metrics)
    else:

        @app.get("/metrics", tags=["service"], response_class=Response)
        async def prometheus(_: Caller) -> Response:
            """Prometheus text format: requests, latencies, commands, live sandboxes."""
            return await _metrics()

        @app.get("/openapi.json", include_in_schema=False)
        async def openapi(_: Caller) -> JSONResponse:
            return JSONResponse(app.openapi())

        @app.get("/docs", include_in_schema=False)
        async def docs(_: Caller) -> Response:
            return get_swagger_ui_html(openapi_url="/openapi.json", title=app.title)

    # -- sandboxes -----------------------------------------------------------------------------
    @app.post("/v1/sandboxes", status_code=201, response_model=SandboxInfo, tags=["sandboxes"])
    async def create_sandbox(req: CreateSandbox, who: Caller) -> SandboxInfo:
        return await slots.run(who, pool.create, who, req)

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
    async def delete_sandbox(sandbox_id: str, who: Caller) -> Response:
        await slots.control(who, pool.delete, who, sandbox_id)
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
    async def execute(sandbox_id: str, req: ExecRequest, who: Caller) -> Response:
        metrics.execs.inc()
        kwargs = {"timeout": req.timeout, "cwd": req.cwd, "env": req.env, "stdin": req.stdin}
        kwargs["user"] = req.user
        if not req.stream:

            def run() -> ExecResult:
                return pool.get(who, sandbox_id).exec(req.cmd, **kwargs)

            result = await slots.run(who, run)
            return Response(result.model_dump_json(), media_type="application/json")
        sandbox = await slots.run(who, pool.get, who, sandbox_id)
        output = sandbox.open_stream(req.cmd, **kwargs)
        return StreamingResponse(
            _ndjson(output, slots.of(who), slots.threads), media_type="application/x-ndjson"
        )

    @app.post("/v1/sandboxes/{sandbox_id}/kill", response_model=KillReport, tags=["commands"])
    async def kill_all(sandbox_id: str, who: Caller) -> KillReport:
        """SIGKILL every process of the sandbox (sessions' shells too) but its init."""
        return KillReport(left=await slots.control(who, pool.kill_all, who, sandbox_id))

    @app.post("/v1/sandboxes/{sandbox_id}/sessions", status_code=201, tags=["commands"])
    async def open_session(sandbox_id: str, req: SessionRequest, who: Caller) -> SessionInfo:
        """A persistent bash: `cd`, exports and background jobs survive between commands."""
        session_id = await slots.run(
            who, pool.open_session, who, sandbox_id, req.cwd, req.env, req.user
        )
        return SessionInfo(id=session_id, sandbox=sandbox_id)

    @app.post("/v1/sessions/{session_id}/run", response_model=ExecResult, tags=["commands"])
    async def session_run(session_id: str, req: SessionRun, who: Caller) -> ExecResult:
        metrics.execs.inc()
        check_timeout(req.timeout)

        def run() -> ExecResult:
            return pool.session(who, session_id).run(req.cmd, timeout=req.timeout)

        return await slots.run(who, run)

    @app.delete("/v1/sessions/{session_id}", status_code=204, tags=["commands"])
    async def close_session(session_id: str, who: Caller) -> Response:
        await slots.control(who, pool.close_session, who, session_id)
        return Response(status_code=204)

    # -- files ---------------------------------------------------------------------------------
    @app.get(
        "/v1/sandboxes/{sandbox_id}/files",
        tags=["files"],
        response_class=Response,
        responses=RAW_REPLY,
    )
    async def read_file(
        sandbox_id: str,
        path: PathQ,
        who: Caller,
        max_bytes: Annotated[int | None, Query(ge=0, description="refuse bigger files")] = None,
    ) -> Response:
        """The file's bytes (application/octet-stream), streamed; 413 (before reading) for a
        file over `max_bytes` or the server's --max-download."""
        cap = max_download if max_bytes is None else min(max_bytes, max_download)

        def opened() -> tuple[Any, int]:
            return pool.get(who, sandbox_id).open_read(path, cap)

        fh, size = await slots.run(who, opened)
        return StreamingResponse(
            _file_chunks(fh, slots.threads),
            media_type="application/octet-stream",
            headers={"content-length": str(size)},
        )

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

        def write() -> None:
            pool.get(who, sandbox_id).write_bytes(path, data, int(mode, 8))

        await slots.run(who, write)
        return Response(status_code=204)

    @app.delete("/v1/sandboxes/{sandbox_id}/files", tags=["files"])
    async def remove_file(sandbox_id: str, path: PathQ, who: Caller) -> dict[str, bool]:
        """Remove a file, link or whole directory (never following links)."""
        removed = await slots.run(who, lambda: pool.get(who, sandbox_id).remove(path))
        return {"removed": removed}

    @app.get("/v1/sandboxes/{sandbox_id}/dir", response_model=list[FileInfo], tags=["files"])
    async def list_dir(sandbox_id: str, path: PathQ, who: Caller) -> list[FileInfo]:
        return await slots.run(who, lambda: pool.get(who, sandbox_id).list_dir(path))

    @app.get("/v1/sandboxes/{sandbox_id}/stat", tags=["files"])
    async def stat(sandbox_id: str, path: PathQ, who: Caller) -> dict[str, bool]:
        """Whether `path` exists, and whether it is a directory."""

        def look() -> dict[str, bool]:
            sandbox = pool.get(who, sandbox_id)
            found = sandbox.exists(path)
            return {"exists": found, "is_dir": found and sandbox.is_dir(path)}

        return await slots.run(who, look)

    @app.get(
        "/v1/sandboxes/{sandbox_id}/tree",
        tags=["files"],
        response_class=Response,
        responses=TAR_REPLY,
    )
    async def read_tree(
        sandbox_id: str,
        path: PathQ,
        who: Caller,
        max_bytes: Annotated[int | None, Query(ge=0, description="refuse bigger trees")] = None,
    ) -> Response:
        """A directory's contents as an uncompressed tar archive (application/x-tar), made by
        the server (never by the sandbox's own `tar`); 413 for a tree whose files pass
        `max_bytes` or the server's --max-tree, checked before anything is sent."""
        cap = max_tree if max_bytes is None else min(max_bytes, max_tree)

        def archive() -> Any:
            sandbox = pool.get(who, sandbox_id)
            if not sandbox.is_dir(path):
                raise ApiError(400, "invalid_argument", f"{path!r} is not a directory", "path")
            spool = tempfile.SpooledTemporaryFile(8 << 20)  # noqa: SIM115 (closed by the stream)
            try:
                sandbox.write_tar(path, spool, cap)
            except BaseException:
                spool.close()
                raise
            spool.seek(0)
            return spool

        spool = await slots.run(who, archive)
        return StreamingResponse(_file_chunks(spool, slots.threads), media_type="application/x-tar")

    @app.put(
        "/v1/sandboxes/{sandbox_id}/tree",
        status_code=204,
        tags=["files"],
        openapi_extra=TAR_BODY,
        responses={413: ERRORS[400] | {"description": "over the upload limit"}},
    )
    async def write_tree(
        sandbox_id: str,
        path: PathQ,
        request: Request,
        who: Caller,
        owner: Annotated[str | None, Query(description="user[:group] to own the files")] = None,
    ) -> Response:
        """Unpack the tar archive in the body into the directory `path` (created if missing)."""
        data = await _body(request, max_upload)

        def unpack() -> None:
            pool.get(who, sandbox_id).write_tree(path, data, owner=owner)

        await slots.run(who, unpack)
        return Response(status_code=204)

    # -- snapshots -----------------------------------------------------------------------------
    @app.post(
        "/v1/sandboxes/{sandbox_id}/snapshots",
        status_code=201,
        response_model=SnapshotInfo,
        tags=["snapshots"],
    )
    async def snapshot(sandbox_id: str, who: Caller) -> SnapshotInfo:
        snap_id, created = await slots.run(who, pool.snapshot, who, sandbox_id)
        return SnapshotInfo(id=snap_id, source=sandbox_id, created=created)

    @app.post(
        "/v1/snapshots/{snapshot_id}/fork",
        status_code=201,
        response_model=SandboxInfo,
        tags=["snapshots"],
    )
    async def fork(snapshot_id: str, req: ForkRequest, who: Caller) -> SandboxInfo:
        return await slots.run(who, pool.fork, who, snapshot_id, req)

    @app.delete("/v1/snapshots/{snapshot_id}", status_code=204, tags=["snapshots"])
    async def remove_snapshot(snapshot_id: str, who: Caller) -> Response:
        await slots.control(who, pool.remove_snapshot, who, snapshot_id)
        return Response(status_code=204)

    # -- tokens (admin) ------------------------------------------------------------------------
    @app.get("/v1/tokens", response_model=list[TokenInfo], tags=["tokens"])
    def list_tokens(_: Admin) -> list[TokenInfo]:
        return [token_info(t) for t in store.tokens()]

    @app.post("/v1/tokens", status_code=201, response_model=TokenInfo, tags=["tokens"])
    def create_token(req: TokenRequest, _: Admin) -> TokenInfo:
        fields = req.model_dump(exclude={"name"})
        for name in ("max_memory", "max_disk"):
            if fields[name] is not None:
                fields[name] = parse_size(fields[name], name)
        token, secret = store.create_token(req.name, **fields)
        return token_info(token, secret)

    @app.delete("/v1/tokens/{token_id}", status_code=204, tags=["tokens"])
    def revoke_token(token_id: str, _: Admin) -> Response:
        if not store.revoke_token(token_id):
            raise ApiError(404, "not_found", f"no live token {token_id!r}")
        app.state.tokens.clear()
        return Response(status_code=204)

    return app


def token_info(token: Token, secret: str | None = None) -> TokenInfo:
    limits = {name: token.limit(name) for name in DEFAULT_LIMITS}
    return TokenInfo(**vars(token), limits=limits, secret=secret)


def _error_of(exc: BaseException) -> tuple[int, str, str]:
    for kind, status, code in _STATUS:
        if isinstance(exc, kind):
            return status, code, str(exc)
    if isinstance(exc, ApiError):
        return exc.status, exc.code, str(exc)
    return 500, "internal", f"{type(exc).__name__}: {exc}"


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


async def _ndjson(
    output: OutputStream, share: anyio.CapacityLimiter, threads: anyio.CapacityLimiter
) -> AsyncIterator[bytes]:
    """Output lines as they arrive, then the result (or the error) as the last line. The
    command holds one of its token's slots while it runs; the client leaving (the response is
    cancelled) kills it."""
    try:
        async with share:
            while True:
                try:
                    item = await anyio.to_thread.run_sync(output.next_chunk, 0.5, limiter=threads)
                except TimeoutError:
                    continue
                if item is None:
                    break
                stream, data = item
                line = {"stream": stream, "data": data.decode(errors="replace")}
                yield (json.dumps(line) + "\n").encode()
    finally:
        output.close()
    if output.error is not None:
        _, code, message = _error_of(output.error)
        yield (json.dumps({"error": {"code": code, "message": message}}) + "\n").encode()
    elif output.result is not None:
        yield (json.dumps({"result": output.result.model_dump()}) + "\n").encode()


async def _file_chunks(fh: Any, threads: anyio.CapacityLimiter) -> AsyncIterator[bytes]:
    try:
        while chunk := await anyio.to_thread.run_sync(fh.read, CHUNK, limiter=threads):
            yield chunk
    finally:
        fh.close()
