"""One unary envd call, start to end: authorise, decode, run the work on a worker thread
within the caller's slots, answer the message or the Connect error."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from rockroll.errors import SandboxClosed
from rockroll.sandbox.base import Sandbox
from rockroll.service.e2b.access import E2bHttpError, envd_sandbox, envd_target
from rockroll.service.e2b.connect import (
    RpcError,
    error_response,
    rpc_error_of,
    unary_request,
    unary_response,
    unimplemented,
)
from rockroll.service.state import Service, Svc

Work = Callable[[Sandbox, dict[str, Any]], dict[str, Any]]


async def unary(request: Request, svc: Service, work: Work) -> Response:
    """Answer a unary call with `work(sandbox, message)`. A caller who may not reach the
    sandbox gets the proxy's answer (E2bHttpError, plain JSON); any other error is the call's."""
    who, sandbox_id = envd_target(request)
    try:
        message = await unary_request(request)

        def run() -> dict[str, Any]:
            return work(envd_sandbox(svc, who, sandbox_id), message)

        return unary_response(await svc.slots.run(who, run))
    except E2bHttpError:
        raise
    except SandboxClosed as exc:
        error = RpcError("unavailable", f"The sandbox {sandbox_id} was not found ({exc})")
        return error_response(error)
    except Exception as exc:
        return error_response(rpc_error_of(exc))


def refuse_the_rest(router: APIRouter, prefix: str, what: str) -> None:
    """Answer every other method under `prefix` as unimplemented, naming `what` it is for."""

    @router.post(prefix + "/{method}")
    async def refused(method: str, request: Request, svc: Svc) -> Response:
        def work(sandbox: Sandbox, message: dict[str, Any]) -> dict[str, Any]:
            raise unimplemented(f"{prefix.strip('/')}/{method} ({what})")

        return await unary(request, svc, work)
