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
from collections.abc import AsyncIterator

from fastapi import FastAPI

from rockroll.sandbox.files import MAX_READ
from rockroll.sandbox.trees import MAX_TREE
from rockroll.service.api_errors import ERRORS, add_error_handlers
from rockroll.service.auth import TokenCache
from rockroll.service.body_limit import BodyLimit
from rockroll.service.metrics import Metrics, MetricsMiddleware
from rockroll.service.pool import Pool
from rockroll.service.routes import commands, files, health, sandboxes, sessions, snapshots, tokens
from rockroll.service.slots import Slots
from rockroll.service.state import VERSION, Limits, Service

__all__ = ["create_app"]

MAX_UPLOAD = 256 << 20
MAX_JSON = 16 << 20  # a JSON body (an exec's stdin is in it)
# In the order they are matched and documented.
ROUTERS = (
    sandboxes.router,
    commands.router,
    sessions.router,
    files.router,
    snapshots.router,
    tokens.router,
)


@contextlib.asynccontextmanager
async def _lifespan(_: FastAPI) -> AsyncIterator[None]:
    yield


def create_app(
    pool: Pool,
    *,
    max_upload: int = MAX_UPLOAD,
    max_download: int = MAX_READ,
    max_tree: int = MAX_TREE,
    public_metrics: bool = False,
    e2b: bool = False,
) -> FastAPI:
    """The API over `pool` (and its store); `rockroll serve` runs it under uvicorn. With `e2b`
    it also speaks enough of E2B's API for the `e2b` SDK (rockroll.service.e2b)."""
    app = FastAPI(
        title="rockroll sandbox service",
        version=VERSION,
        description=__doc__,
        lifespan=_lifespan,
        responses=ERRORS,  # type: ignore[arg-type]
        openapi_url="/openapi.json" if public_metrics else None,
        docs_url="/docs" if public_metrics else None,
        redoc_url=None,
    )
    metrics = Metrics(pool)
    app.state.service = Service(
        pool=pool,
        slots=Slots(),
        metrics=metrics,
        limits=Limits(upload=max_upload, download=max_download, tree=max_tree),
        tokens=TokenCache(pool.store),
    )
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.add_middleware(BodyLimit, limit=MAX_JSON, exempt=("/files", "/tree"))
    add_error_handlers(app)
    app.include_router(health.router)
    app.include_router(health.metrics_public if public_metrics else health.metrics_guarded)
    for router in ROUTERS:
        app.include_router(router)
    if e2b:
        from rockroll.service.e2b import mount

        mount(app)
    return app
