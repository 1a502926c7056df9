"""The error side of the HTTP API: a route's own refusals, the error body and its handlers.

Every error answers `{"error": {"code", "message", "field"}}`. The status and code of an error
raised below the routes come from `rockroll.errors.wire`, the one table; a refusal of the HTTP
layer itself (no token, a malformed label) is an `ApiError` carrying its own.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from rockroll.errors import RockrollError, SandboxError, wire
from rockroll.service.bodies import ErrorBody


class ApiError(RockrollError):
    """A refusal with its HTTP status and error code."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.field = status, code, field  # type: ignore[misc]


# The error responses every route documents (OpenAPI), by status.
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


def error_of(exc: BaseException) -> tuple[int, str, str]:
    """(status, code, message) of any exception: the wire table's, or a 500 naming a bug."""
    return wire(exc) or (500, "internal", f"{type(exc).__name__}: {exc}")


def add_error_handlers(app: FastAPI) -> None:
    """Answer every exception a request raises with the error body."""
    app.add_exception_handler(ApiError, _api_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _invalid)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _http)  # type: ignore[arg-type]
    for kind in (SandboxError, OSError, Exception):  # Exception: a bug's 500 keeps the body
        app.add_exception_handler(kind, _known)


async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
    return error_response(exc.status, exc.code, str(exc), exc.field)


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


async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return error_response(exc.status_code, code, str(exc.detail))


async def _known(_: Request, exc: Exception) -> JSONResponse:
    return error_response(*error_of(exc))
