"""ASGI middleware: request body limit, and per-request logging, tracing and metrics."""

from __future__ import annotations

import time
import uuid

import structlog
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

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
