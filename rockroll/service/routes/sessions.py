"""Sessions: persistent bash shells in a sandbox, run line by line (the `commands` tag)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from rockroll.sandbox.checks import check_timeout
from rockroll.service.auth import Caller
from rockroll.service.bodies import ExecResult, SessionInfo, SessionRequest, SessionRun
from rockroll.service.state import Svc

router = APIRouter(tags=["commands"])


@router.post("/v1/sandboxes/{sandbox_id}/sessions", status_code=201)
async def open_session(sandbox_id: str, req: SessionRequest, who: Caller, svc: Svc) -> SessionInfo:
    """A persistent bash: `cd`, exports and background jobs survive between commands."""
    session_id = await svc.slots.run(
        who, svc.pool.open_session, who, sandbox_id, req.cwd, req.env, req.user
    )
    return SessionInfo(id=session_id, sandbox=sandbox_id)


@router.post("/v1/sessions/{session_id}/run", response_model=ExecResult)
async def session_run(session_id: str, req: SessionRun, who: Caller, svc: Svc) -> ExecResult:
    svc.metrics.execs.inc()
    check_timeout(req.timeout)
    pool = svc.pool

    def run() -> ExecResult:
        return pool.session(who, session_id).run(req.cmd, timeout=req.timeout)

    return await svc.slots.run(who, run)


@router.delete("/v1/sessions/{session_id}", status_code=204)
async def close_session(session_id: str, who: Caller, svc: Svc) -> Response:
    await svc.slots.control(who, svc.pool.close_session, who, session_id)
    return Response(status_code=204)
