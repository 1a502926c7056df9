"""E2B compatibility for `rockroll serve --e2b`: enough of E2B's control plane and of envd
(the agent inside an E2B sandbox) that an unchanged `e2b` SDK, pointed at this server with
E2B_API_URL and E2B_SANDBOX_URL (and a rockroll token as E2B_API_KEY), creates sandboxes of
the server's pool, runs commands in them (streamed, in the background, killed by signal),
moves files and sets their timeout.

- `rest`: the control plane (`/v2/sandboxes`, `/sandboxes/{id}`, `/timeout`, `/connect`).
- `access`: who a request is, which sandbox it reaches, the errors E2B's edge answers with.
- `connect`: Connect-RPC's envelope and JSON codec; `unary`: one unary call, end to end.
- `process` over `processes`: envd's process service, a pid-addressed table per sandbox.
- `filesystem`: envd's filesystem service; `files_http`: envd's `/files` and `/health`.
- `messages`: the JSON shapes the SDK reads.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from rockroll.service.e2b import files_http, filesystem, process, rest
from rockroll.service.e2b.access import E2bHttpError, json_error
from rockroll.service.e2b.processes import ProcessTable

__all__ = ["mount"]


def mount(app: FastAPI) -> None:
    """Add the E2B routes (after rockroll's own: nothing of theirs is shadowed)."""
    app.state.e2b_processes = ProcessTable()
    app.add_exception_handler(E2bHttpError, _refused)  # type: ignore[arg-type]
    for router in (rest.router, process.router, filesystem.router, files_http.router):
        app.include_router(router)


async def _refused(_: Request, exc: E2bHttpError) -> JSONResponse:
    return json_error(exc.status, exc.message)
