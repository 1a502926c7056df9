"""The Prometheus series of the server, and the middleware that counts and times requests."""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from rockroll.service.pool import Pool


class Metrics:
    """Prometheus series of one app (a registry of its own, so tests can run many apps)."""

    def __init__(self, pool: Pool) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "rockroll_http_requests",
            "HTTP requests by route and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "rockroll_http_request_seconds",
            "time to the response's start, by route",
            ["method", "route"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5, 30),
            registry=self.registry,
        )
        self.execs = Counter(
            "rockroll_exec_commands", "commands run through the API", registry=self.registry
        )
        live = Gauge("rockroll_sandboxes_live", "live sandboxes", registry=self.registry)
        live.set_function(pool.live_count)


class MetricsMiddleware:
    """Counts and times every request by route template (a plain ASGI middleware: Starlette's
    `@app.middleware("http")` costs a task and a stream per request)."""

    def __init__(self, app: Any, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = 500

        async def sent(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sent)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            method = scope["method"]
            self.metrics.latency.labels(method, route).observe(time.perf_counter() - t0)
            self.metrics.requests.labels(method, route, str(status)).inc()
