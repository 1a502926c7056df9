"""Tokens, for admins: list, create (the secret is shown once), revoke (the `tokens` tag)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from rockroll.sandbox.spec import parse_size
from rockroll.service.api_errors import ApiError
from rockroll.service.auth import Admin
from rockroll.service.bodies import TokenInfo, TokenRequest
from rockroll.service.state import Svc
from rockroll.service.store import DEFAULT_LIMITS, Token

router = APIRouter(tags=["tokens"])


@router.get("/v1/tokens", response_model=list[TokenInfo])
def list_tokens(_: Admin, svc: Svc) -> list[TokenInfo]:
    return [token_info(t) for t in svc.store.tokens()]


@router.post("/v1/tokens", status_code=201, response_model=TokenInfo)
def create_token(req: TokenRequest, _: Admin, svc: Svc) -> TokenInfo:
    fields = req.model_dump(exclude={"name"})
    for name in ("max_memory", "max_disk"):
        if fields[name] is not None:
            fields[name] = parse_size(fields[name], name)
    token, secret = svc.store.create_token(req.name, **fields)
    return token_info(token, secret)


@router.delete("/v1/tokens/{token_id}", status_code=204)
def revoke_token(token_id: str, _: Admin, svc: Svc) -> Response:
    if not svc.store.revoke_token(token_id):
        raise ApiError(404, "not_found", f"no live token {token_id!r}")
    svc.tokens.clear()
    return Response(status_code=204)


def token_info(token: Token, secret: str | None = None) -> TokenInfo:
    limits = {name: token.limit(name) for name in DEFAULT_LIMITS}
    return TokenInfo(**vars(token), limits=limits, secret=secret)
