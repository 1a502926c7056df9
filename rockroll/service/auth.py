"""Who a request is: the token of its `Authorization: Bearer` header, looked up once per
token change, and the dependencies routes declare (`Caller`, `Admin`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from rockroll.service.api_errors import ApiError
from rockroll.service.store import Store, Token


async def caller(request: Request) -> Token:
    """The token of the request's `Authorization: Bearer` header, or a 401."""
    header = request.headers.get("authorization", "")
    scheme, _, secret = header.partition(" ")
    if not header:
        raise ApiError(
            401,
            "unauthorized",
            "send `Authorization: Bearer TOKEN`; create a token with `rockroll token create`",
        )
    if scheme.lower() != "bearer" or not secret.strip():
        raise ApiError(401, "unauthorized", "the Authorization header must be `Bearer TOKEN`")
    token = request.app.state.service.tokens.get(secret.strip())
    if token is None:
        raise ApiError(401, "unauthorized", "unknown or revoked token")
    return token


def admin(token: Annotated[Token, Depends(caller)]) -> Token:
    if not token.admin:
        raise ApiError(403, "forbidden", "this route needs an admin token")
    return token


Caller = Annotated[Token, Depends(caller)]
Admin = Annotated[Token, Depends(admin)]


class TokenCache:
    """Token lookups remembered until any token changes: each request reads one counter (the
    token generation, bumped by every create and revoke, from any process) instead of the
    token's row, so a token revoked with `rockroll token revoke` stops working at once."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._seen: dict[str, Token | None] = {}
        self._generation = -1

    def get(self, secret: str) -> Token | None:
        generation = self.store.token_generation()
        if generation != self._generation:
            self._seen, self._generation = {}, generation
        if secret in self._seen:
            return self._seen[secret]
        token = self.store.token_for(secret)
        if len(self._seen) > 10_000:
            self._seen.clear()
        self._seen[secret] = token
        return token

    def clear(self) -> None:
        self._seen.clear()
