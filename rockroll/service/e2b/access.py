"""Who an E2B request is and which sandbox it reaches, and the errors E2B's edge answers with.

The control plane takes the caller's rockroll token as the E2B API key (`X-API-Key`). Each
sandbox's envd access token, handed out at create and connect, is that same token: envd calls
(`X-Access-Token`, routed by `E2b-Sandbox-Id`) are authorised as its owner, so a revoked token
stops working at once and another owner's sandbox answers exactly as a missing one does (502
"The sandbox ... was not found", what E2B's proxy says of a sandbox that is gone).

Errors are `{"code": STATUS, "message"}`, the body the SDK reads on both sides
(`e2b.api.handle_api_exception`, `e2b.envd.api.get_message`).
"""

from __future__ import annotations

import base64
import binascii

from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from rockroll.errors import SandboxClosed, SandboxNotFound, wire
from rockroll.sandbox.base import Sandbox
from rockroll.service.state import Service
from rockroll.service.store import Token

SANDBOX_HEADER = "e2b-sandbox-id"


class E2bHttpError(Exception):
    """A refusal answered as plain JSON `{"code": status, "message"}`."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def json_error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"code": status, "message": message}, status_code=status)


def http_error_of(exc: BaseException) -> E2bHttpError:
    """The E2B answer for an exception of the control plane or the `/files` routes."""
    if isinstance(exc, E2bHttpError):
        return exc
    if isinstance(exc, ValidationError):
        return E2bHttpError(400, str(exc))
    known = wire(exc)
    if known is None:
        return E2bHttpError(500, f"{type(exc).__name__}: {exc}")
    status, _, message = known
    return E2bHttpError(404 if status == 410 else status, message)


def _token(request: Request, header: str, what: str) -> Token:
    secret = request.headers.get(header, "").strip()
    if not secret:
        raise E2bHttpError(
            401, f"send the {what} in {header} (a rockroll token: `rockroll token create`)"
        )
    token = request.app.state.service.tokens.get(secret)
    if token is None:
        raise E2bHttpError(401, f"unknown or revoked {what}")
    return token


def api_caller(request: Request) -> Token:
    """The token of the control-plane request's `X-API-Key`, or a 401."""
    return _token(request, "x-api-key", "API key")


def envd_target(request: Request) -> tuple[Token, str]:
    """(token, sandbox id) of an envd request: its `X-Access-Token` and `E2b-Sandbox-Id`."""
    sandbox_id = request.headers.get(SANDBOX_HEADER, "").strip()
    if not sandbox_id:
        raise E2bHttpError(
            400,
            "no E2b-Sandbox-Id header: point the SDK's sandbox_url (E2B_SANDBOX_URL) at this "
            "server, which routes envd requests by that header",
        )
    return _token(request, "x-access-token", "envd access token"), sandbox_id


def envd_sandbox(svc: Service, who: Token, sandbox_id: str) -> Sandbox:
    """The live sandbox of `who`; anything else (missing, another owner's, deleted) is the
    same 502 E2B's proxy answers for a sandbox that is gone. Blocking (the store)."""
    try:
        return svc.pool.get(who, sandbox_id)
    except (SandboxNotFound, SandboxClosed):
        raise E2bHttpError(502, f"The sandbox {sandbox_id} was not found") from None


def envd_user(request: Request) -> str | None:
    """The user of `Authorization: Basic base64(user:)`, as the SDK names one (None: the
    sandbox's default user)."""
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic" or not value:
        return None
    try:
        user = base64.b64decode(value, validate=True).decode().partition(":")[0]
    except (binascii.Error, UnicodeDecodeError):
        raise E2bHttpError(400, "the Authorization header is not Basic base64(user:)") from None
    return user or None
