"""E2B's control plane over the server's pool: create (`POST /v2/sandboxes`, `/sandboxes`),
connect, look at, list, set the timeout of and kill sandboxes. An E2B sandbox is a rockroll
sandbox of the caller's token: the template is the image ("base" by default), `metadata` its
labels, `envVars` its environment, `timeout` its hard deadline (`lifetime`, 300 s unless
given). What rockroll cannot do here (pause, resume, snapshots, forks, network changes, MCP,
volumes, workload identity, auto-pause) is refused with a message naming it."""

from __future__ import annotations

import time
import urllib.parse
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from rockroll.errors import InvalidArgument
from rockroll.service.bodies import CreateSandbox, SandboxInfo
from rockroll.service.e2b import messages
from rockroll.service.e2b.access import E2bHttpError, api_caller, http_error_of
from rockroll.service.state import Service, Svc
from rockroll.service.store import Token

router = APIRouter(include_in_schema=False)
REFUSED_FIELDS = {
    "mcp": "MCP servers",
    "volumeMounts": "volumes",
    "iam": "workload identity",
    "network": "network rules (use allow_internet_access)",
}


async def _body(request: Request) -> dict[str, Any]:
    try:
        body = await request.json() if await request.body() else {}
    except ValueError:
        raise E2bHttpError(400, "the body is not JSON") from None
    if not isinstance(body, dict):
        raise E2bHttpError(400, "the body must be a JSON object")
    return body


def _seconds(value: Any, default: float | None) -> float | None:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise InvalidArgument(f"timeout must be a positive number of seconds, got {value!r}")
    return float(value)


def _create_request(body: dict[str, Any]) -> CreateSandbox:
    for key, what in REFUSED_FIELDS.items():
        if body.get(key):
            raise E2bHttpError(400, f"{what} ({key}) are not supported by rockroll serve --e2b")
    if body.get("autoPause") or body.get("autoResume"):
        raise E2bHttpError(400, "pausing (autoPause, autoResume) is not supported by rockroll")
    template = body.get("templateID") or "base"
    if not isinstance(template, str):
        raise InvalidArgument("templateID must be a string (a rockroll image name)")
    internet = body.get("allow_internet_access")
    return CreateSandbox(
        image=template,
        env=body.get("envVars") or {},
        labels=body.get("metadata") or {},
        network="full" if internet else "none",
        lifetime=_seconds(body.get("timeout"), messages.DEFAULT_TIMEOUT),
    )


def _key(request: Request) -> str:
    return request.headers.get("x-api-key", "").strip()


@router.post("/sandboxes", status_code=201)
@router.post("/v2/sandboxes", status_code=201)
async def create(request: Request, svc: Svc) -> JSONResponse:
    try:
        who = api_caller(request)
        req = _create_request(await _body(request))
        info = await svc.slots.run(who, svc.pool.create, who, req)
    except Exception as exc:
        raise http_error_of(exc) from None
    return JSONResponse(messages.created(info, _key(request)), status_code=201)


@router.post("/sandboxes/{sandbox_id}/connect")
@router.post("/v2/sandboxes/{sandbox_id}/connect")
async def connect(sandbox_id: str, request: Request, svc: Svc) -> JSONResponse:
    """A running sandbox's access; its timeout is moved only if that makes it longer."""
    try:
        who = api_caller(request)
        seconds = _seconds((await _body(request)).get("timeout"), None)

        def look() -> Any:
            info = svc.pool.info(who, sandbox_id)
            svc.pool.get(who, sandbox_id)  # live, or gone
            later = info.deadline is not None and info.deadline < time.time() + (seconds or 0)
            if seconds is not None and later:  # never shortened, nor given one it had not
                svc.pool.set_lifetime(who, sandbox_id, seconds)
            return info

        info = await svc.slots.control(who, look)
    except Exception as exc:
        raise http_error_of(exc) from None
    return JSONResponse(messages.created(info, _key(request)), status_code=200)


async def _running(svc: Service, who: Token, sandbox_id: str) -> SandboxInfo:
    """The caller's sandbox while it runs; a 404 once it has ended (or was never theirs)."""
    info = await svc.slots.control(who, svc.pool.info, who, sandbox_id)
    if info.status != "running":
        raise E2bHttpError(404, f"sandbox {sandbox_id} is {info.status}: {info.reason}")
    return info


@router.get("/sandboxes/{sandbox_id}")
async def get_info(sandbox_id: str, request: Request, svc: Svc) -> JSONResponse:
    try:
        who = api_caller(request)
        info = await _running(svc, who, sandbox_id)
    except Exception as exc:
        raise http_error_of(exc) from None
    return JSONResponse(messages.detail(info, _key(request)))


@router.get("/sandboxes")
@router.get("/v2/sandboxes")
async def list_sandboxes(request: Request, svc: Svc) -> JSONResponse:
    """Running sandboxes of the caller (none is ever paused), filtered by `metadata`."""
    try:
        who = api_caller(request)
        wanted = dict(urllib.parse.parse_qsl(request.query_params.get("metadata", "")))
        states = request.query_params.get("state", "running").split(",")
        found = await svc.slots.control(who, lambda: svc.pool.list(who, labels=wanted))
    except Exception as exc:
        raise http_error_of(exc) from None
    running = [i for i in found if i.status == "running"] if "running" in states else []
    listed = [messages.listed(i) for i in running]
    return JSONResponse(listed)


@router.delete("/sandboxes/{sandbox_id}", status_code=204)
async def kill(sandbox_id: str, request: Request, svc: Svc) -> Response:
    try:
        who = api_caller(request)
        await _running(svc, who, sandbox_id)
        await svc.slots.control(who, svc.pool.delete, who, sandbox_id)
    except Exception as exc:
        raise http_error_of(exc) from None
    return Response(status_code=204)


@router.post("/sandboxes/{sandbox_id}/timeout", status_code=204)
async def set_timeout(sandbox_id: str, request: Request, svc: Svc) -> Response:
    """The sandbox is deleted `timeout` seconds from now (longer or shorter than before)."""
    try:
        who = api_caller(request)
        seconds = _seconds((await _body(request)).get("timeout"), None)
        if seconds is None:
            raise InvalidArgument("timeout (seconds) is required")
        await svc.slots.control(who, svc.pool.set_lifetime, who, sandbox_id, seconds)
    except Exception as exc:
        raise http_error_of(exc) from None
    return Response(status_code=204)


@router.api_route("/sandboxes/{sandbox_id}/{action}", methods=["GET", "POST", "PUT", "DELETE"])
@router.api_route("/v2/sandboxes/{sandbox_id}/{action}", methods=["GET", "POST", "PUT"])
async def refused(sandbox_id: str, action: str, request: Request) -> Response:
    """Pause, resume, snapshots, fork, network, metrics, logs, refreshes: not here."""
    api_caller(request)
    raise E2bHttpError(501, f"{action} is not supported by rockroll serve --e2b")


REFUSED_FAMILIES = ("templates", "v2/templates", "v3/templates", "snapshots", "volumes", "secrets")


async def refused_family(request: Request) -> Response:
    """Templates (builds), snapshots, volumes and secrets: rockroll has none of E2B's."""
    api_caller(request)
    family = request.url.path.strip("/").split("/")
    name = family[1] if family[0] in ("v2", "v3") and len(family) > 1 else family[0]
    raise E2bHttpError(501, f"{name} are not supported by rockroll serve --e2b")


for _family in REFUSED_FAMILIES:
    for _path in (f"/{_family}", f"/{_family}/{{rest:path}}"):
        router.add_api_route(
            _path, refused_family, methods=["GET", "POST", "PUT", "PATCH", "DELETE"]
        )
