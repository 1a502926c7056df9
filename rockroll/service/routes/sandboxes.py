"""Sandboxes: create, list, look at, delete, and their audit log (the `sandboxes` tag)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import Response

from rockroll.service.api_errors import ApiError
from rockroll.service.auth import Caller
from rockroll.service.bodies import CreateSandbox, NetworkChange, SandboxInfo, SandboxList
from rockroll.service.state import Svc

router = APIRouter(tags=["sandboxes"])


@router.post("/v1/sandboxes", status_code=201, response_model=SandboxInfo)
async def create_sandbox(req: CreateSandbox, who: Caller, svc: Svc) -> SandboxInfo:
    return await svc.slots.run(who, svc.pool.create, who, req)


@router.get("/v1/sandboxes", response_model=SandboxList)
def list_sandboxes(
    who: Caller,
    svc: Svc,
    status: Annotated[str, Query(pattern="^(live|creating|running|deleted|lost)$")] = "live",
    label: Annotated[list[str] | None, Query(description="KEY=VALUE, repeatable")] = None,
) -> SandboxList:
    wanted = {}
    for item in label or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ApiError(422, "validation_error", f"label {item!r} is not KEY=VALUE", "label")
        wanted[key] = value
    return SandboxList(sandboxes=svc.pool.list(who, status=status, labels=wanted))


@router.get("/v1/sandboxes/{sandbox_id}", response_model=SandboxInfo)
def get_sandbox(sandbox_id: str, who: Caller, svc: Svc) -> SandboxInfo:
    return svc.pool.info(who, sandbox_id)


@router.delete("/v1/sandboxes/{sandbox_id}", status_code=204)
async def delete_sandbox(sandbox_id: str, who: Caller, svc: Svc) -> Response:
    await svc.slots.control(who, svc.pool.delete, who, sandbox_id)
    return Response(status_code=204)


@router.get("/v1/sandboxes/{sandbox_id}/audit")
def audit(sandbox_id: str, who: Caller, svc: Svc) -> list[dict]:
    """Every command run in the sandbox: time, command, exit code, duration."""
    return svc.pool.get(who, sandbox_id).audit_log()


@router.put("/v1/sandboxes/{sandbox_id}/network", status_code=204)
def set_network(sandbox_id: str, body: NetworkChange, who: Caller, svc: Svc) -> Response:
    """Change the sandbox's egress policy while it runs (rockroll.sandbox.egress)."""
    svc.pool.set_network(who, sandbox_id, body.network)
    return Response(status_code=204)


@router.get("/v1/sandboxes/{sandbox_id}/events")
def events(sandbox_id: str, who: Caller, svc: Svc) -> list[dict]:
    """What the sandbox's monitor saw: every program started and connection tried."""
    return svc.pool.get(who, sandbox_id).events()
