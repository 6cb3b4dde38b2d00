"""Prometheus metrics of the token server, served at GET /metrics.

token_server_requests_total{route,status}          HTTP answers, by route and status code
token_server_request_duration_seconds{route}       time to the end of the answer (histogram)
token_server_tokens_issued_total                   tokens signed
plus the process_* and python_gc_* metrics of prometheus_client.

`route` is one of ROUTES or "other" (the web page, its files, unknown paths): never the raw path, so what a
client puts in a URL cannot add series. Each app has its own registry (one uvicorn worker: one set of counters).
"""

from __future__ import annotations

import time

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

ROUTES = frozenset({"/api/token", "/api/rooms", "/healthz", "/metrics"})
OTHER = "other"
# The token endpoint answers in well under a millisecond on one core; queueing shows up in the upper buckets.
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class TokenServerMetrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry()
        for collector in (ProcessCollector, PlatformCollector, GCCollector):
            collector(registry=registry)
        self.requests = Counter(
            "token_server_requests", "HTTP answers by route and status code", ["route", "status"], registry=registry
        )
        self.duration = Histogram(
            "token_server_request_duration_seconds",
            "Time from the request to the end of the answer, by route",
            ["route"],
            buckets=BUCKETS,
            registry=registry,
        )
        self.tokens_issued = Counter("token_server_tokens_issued", "Participant tokens signed", registry=registry)
        # Labelled children, resolved once: .labels() per request would cost more than the increment.
        self._durations = {route: self.duration.labels(route) for route in (*ROUTES, OTHER)}
        self._counts: dict[tuple[str, int], Counter] = {}

    def observe(self, route: str, status: int, seconds: float) -> None:
        count = self._counts.get((route, status))
        if count is None:
            count = self._counts[(route, status)] = self.requests.labels(route, str(status))
        count.inc()
        self._durations[route].observe(seconds)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class RequestMetrics:
    """ASGI middleware that counts every HTTP answer, including those of the middleware inside it (413s)."""

    def __init__(self, app: ASGIApp, metrics: TokenServerMetrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        route = scope["path"] if scope["path"] in ROUTES else OTHER
        status = 500  # what the server answers if the app raises before it starts a response
        started = time.perf_counter()

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            self.metrics.observe(route, status, time.perf_counter() - started)
