"""Commands: run one (its result, or its output streamed as NDJSON), kill them all (the
`commands` tag; the persistent shells are in `sessions`)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import anyio
import anyio.to_thread
from fastapi import APIRouter
from fastapi.responses import Response, StreamingResponse

from rockroll.sandbox.streams import OutputStream
from rockroll.service.api_errors import error_of
from rockroll.service.auth import Caller
from rockroll.service.bodies import ExecRequest, ExecResult, KillReport
from rockroll.service.state import Svc

router = APIRouter(tags=["commands"])
NDJSON_REPLY: dict = {
    200: {
        "description": "the ExecResult, or with `stream: true` NDJSON lines "
        '`{"stream", "data"}` then `{"result": ExecResult}` or `{"error": ErrorDetail}`',
        "content": {"application/x-ndjson": {"schema": {"type": "string"}}},
    }
}


@router.post("/v1/sandboxes/{sandbox_id}/exec", response_model=ExecResult, responses=NDJSON_REPLY)
async def execute(sandbox_id: str, req: ExecRequest, who: Caller, svc: Svc) -> Response:
    svc.metrics.execs.inc()
    pool, slots = svc.pool, svc.slots
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
        ndjson(output, slots.of(who), slots.threads), media_type="application/x-ndjson"
    )


@router.post("/v1/sandboxes/{sandbox_id}/kill", response_model=KillReport)
async def kill_all(sandbox_id: str, who: Caller, svc: Svc) -> KillReport:
    """SIGKILL every process of the sandbox (sessions' shells too) but its init."""
    return KillReport(left=await svc.slots.control(who, svc.pool.kill_all, who, sandbox_id))


async def ndjson(
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
        _, code, message = error_of(output.error)
        yield (json.dumps({"error": {"code": code, "message": message}}) + "\n").encode()
    elif output.result is not None:
        yield (json.dumps({"result": output.result.model_dump()}) + "\n").encode()
