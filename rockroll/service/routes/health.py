"""Health, Prometheus metrics and the API documents (the `service` tag).

`/metrics`, `/openapi.json` and `/docs` need a token unless the server runs with
`--public-metrics`: then `metrics_public` serves /metrics and FastAPI its own documents.
"""

from __future__ import annotations

import time

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import JSONResponse, Response
from prometheus_client import generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from rockroll.service.auth import Caller
from rockroll.service.bodies import Health
from rockroll.service.state import VERSION, Svc

router = APIRouter(tags=["service"])
metrics_public = APIRouter()
metrics_guarded = APIRouter()


@router.get("/v1/health", response_model=Health)
async def health(svc: Svc) -> Health:
    return Health(
        status="ok",
        version=VERSION,
        sandboxes=svc.pool.live_count(),
        uptime=time.time() - svc.started,
    )


async def _metrics(svc: Svc) -> Response:
    return Response(generate_latest(svc.metrics.registry), media_type=CONTENT_TYPE_LATEST)


metrics_public.get("/metrics", tags=["service"], response_class=Response)(_metrics)


@metrics_guarded.get("/metrics", tags=["service"], response_class=Response)
async def prometheus(_: Caller, svc: Svc) -> Response:
    """Prometheus text format: requests, latencies, commands, live sandboxes."""
    return await _metrics(svc)


@metrics_guarded.get("/openapi.json", include_in_schema=False)
async def openapi(request: Request, _: Caller) -> JSONResponse:
    return JSONResponse(request.app.openapi())


@metrics_guarded.get("/docs", include_in_schema=False)
async def docs(request: Request, _: Caller) -> Response:
    return get_swagger_ui_html(openapi_url="/openapi.json", title=request.app.title)
