"""Snapshots: freeze a sandbox's files, fork new sandboxes from them, remove them (the
`snapshots` tag)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from rockroll.service.auth import Caller
from rockroll.service.bodies import ForkRequest, SandboxInfo, SnapshotInfo
from rockroll.service.state import Svc

router = APIRouter(tags=["snapshots"])


@router.post("/v1/sandboxes/{sandbox_id}/snapshots", status_code=201, response_model=SnapshotInfo)
async def snapshot(sandbox_id: str, who: Caller, svc: Svc) -> SnapshotInfo:
    snap_id, created = await svc.slots.run(who, svc.pool.snapshot, who, sandbox_id)
    return SnapshotInfo(id=snap_id, source=sandbox_id, created=created)


@router.post("/v1/snapshots/{snapshot_id}/fork", status_code=201, response_model=SandboxInfo)
async def fork(snapshot_id: str, req: ForkRequest, who: Caller, svc: Svc) -> SandboxInfo:
    return await svc.slots.run(who, svc.pool.fork, who, snapshot_id, req)


@router.delete("/v1/snapshots/{snapshot_id}", status_code=204)
async def remove_snapshot(snapshot_id: str, who: Caller, svc: Svc) -> Response:
    await svc.slots.control(who, svc.pool.remove_snapshot, who, snapshot_id)
    return Response(status_code=204)
