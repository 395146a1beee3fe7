"""ASGI middleware: request body limit, and per-request logging, tracing and metrics."""

from __future__ import annotations

import time
import uuid

import structlog
from starlette.routing import Match, Router
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.errors import error_response
from app.core.logs import parse_trace_context
from app.core.metrics import ApiMetrics

log = structlog.get_logger("app.access")


class BodyLimitMiddleware:
    """Refuse request bodies over `max_bytes` with 413, before any of it reaches a route.

    The body is read here (at most `max_bytes` + 1) and replayed, so a client that lies in
    Content-Length, or sends no length at all, is held to the same limit.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._reject(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._reject(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _reject(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = error_response(
            413, "payload_too_large", f"The request body exceeds {self.max_bytes} bytes."
        )
        await response(scope, receive, send)


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
    # Refused before routing (413): find the route it was meant for.
    app = scope.get("app")
    router = getattr(app, "router", None)
    if isinstance(router, Router):
        for candidate in router.routes:
            match, _ = candidate.matches(scope)
            if match is Match.FULL and hasattr(candidate, "path"):
                return str(candidate.path)
    return "unmatched"
