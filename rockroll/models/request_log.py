"""One log line per request of the model server, once its response has been sent."""

from __future__ import annotations

import logging
import time
from typing import Any

log = logging.getLogger("rockroll.serve")


class RequestLog:
    """One log line per request once its response has been sent (a stream's whole length).

    Plain ASGI, not Starlette's BaseHTTPMiddleware, which hides a client's going away from the
    endpoint (and so would keep a cancelled generation running)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status = time.monotonic(), {"code": "-"}

        async def sending(message: dict) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            took = (time.monotonic() - started) * 1000
            log.info("%s %s %s %.0f ms", scope["method"], scope["path"], status["code"], took)
