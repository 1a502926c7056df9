"""The ceiling on request bodies (JSON ones: the uploads have their own)."""

from __future__ import annotations

import json
from typing import Any


class BodyLimit:
    """Refuses request bodies over `limit` bytes (413) on every route but the uploads (which
    have their own limit), by Content-Length at once or as a chunked body passes it."""

    def __init__(self, app: Any, limit: int, exempt: tuple[str, ...]) -> None:
        self.app, self.limit, self.exempt = app, limit, exempt

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"].endswith(self.exempt):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            await _send_error(send, 413, "too_large", f"the body is over {self.limit} bytes")
            return
        seen = 0

        async def counted() -> dict:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _BodyTooLarge
            return message

        try:
            await self.app(scope, counted, send)
        except _BodyTooLarge:
            await _send_error(send, 413, "too_large", f"the body passed {self.limit} bytes")


class _BodyTooLarge(Exception):
    pass


async def _send_error(send: Any, status: int, code: str, message: str) -> None:
    body = json.dumps({"error": {"code": code, "message": message, "field": None}}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
