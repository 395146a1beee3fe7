"""ASGI middleware: request body limit, per-request logging, tracing and metrics, rehearsal faults."""

from __future__ import annotations

import asyncio
import time
import uuid

import structlog
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.errors import error_response
from app.core.logs import parse_trace_context
from app.core.metrics import ApiMetrics

log = structlog.get_logger("app.access")


class PayloadTooLargeError(StarletteHTTPException):
    """The request body is over the limit. An HTTPException, so FastAPI's body reader lets it through."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"The request body exceeds {limit} bytes.")


class BodyLimitMiddleware:
    """Refuse request bodies over `max_bytes` with 413.

    The limit is enforced while the body is read, so a client that lies in Content-Length,
    or sends none (chunked), is held to it too, and nothing over the limit is ever buffered.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        too_large = declared.isdigit() and int(declared) > self.max_bytes
        received = 0

        async def limited() -> Message:
            nonlocal received
            if too_large:
                raise PayloadTooLargeError(self.max_bytes)
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise PayloadTooLargeError(self.max_bytes)
            return message

        await self.app(scope, limited, send)


# Probes answer as usual, so that a smoke test passes and only the metric gates can catch a fault.
PROBES = frozenset({"/health", "/ready", "/metrics"})


class FaultMiddleware:
    """Fail a share of requests with a 500 and delay each one: a faulty candidate for a rehearsal.

    Installed only when FAULT_ERROR_RATIO or FAULT_DELAY_MS is set, which the settings allow
    only where APP_ENV is local or test. The share is exact, not random: every request adds
    the ratio to a running sum and fails when the sum crosses a whole number.
    """

    def __init__(self, app: ASGIApp, error_ratio: float, delay_ms: int) -> None:
        self.app = app
        self.error_ratio = error_ratio
        self.delay_seconds = delay_ms / 1000
        self._debt = 0.0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in PROBES:
            await self.app(scope, receive, send)
            return
        if self.delay_seconds:
            await asyncio.sleep(self.delay_seconds)
        self._debt += self.error_ratio
        if self._debt >= 1.0:
            self._debt -= 1.0
            response = error_response(500, "internal_error", "Internal server error (FAULT_ERROR_RATIO).")
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


class RequestContextMiddleware:
    """Bind the Cloud Trace context to every log line of a request; log and measure it."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics, project: str | None) -> None:
        self.app = app
        self.metrics = metrics
        self.project = project

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        trace = headers.get(b"x-cloud-trace-context", b"").decode("latin-1")
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(
            request_id=uuid.uuid4().hex, **parse_trace_context(trace, self.project)
        )
        status = 500
        started = time.perf_counter()

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            elapsed = time.perf_counter() - started
            route = _route_template(scope)
            self.metrics.observe(scope["method"], route, status, elapsed)
            log.info(
                "request",
                method=scope["method"],
                path=scope["path"],
                route=route,
                status=status,
                duration_ms=round(elapsed * 1000, 2),
            )
            structlog.contextvars.clear_contextvars()


def _route_template(scope: Scope) -> str:
    # The template, never the raw path: raw paths would give one time series per job id.
    route = scope.get("route")
    if route is not None and hasattr(route, "path"):
        return str(route.path)
    return "unmatched"
