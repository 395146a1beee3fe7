"""The FastAPI application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI

from app.api.deps import reject_unknown_query_params
from app.api.openapi import install_openapi
from app.api.routes import generations, health, metrics
from app.api.state import ApiState
from app.core.errors import install_error_handlers
from app.core.metrics import ApiMetrics
from app.core.middleware import BodyLimitMiddleware, FaultMiddleware, RequestContextMiddleware
from app.schemas import MAX_BODY_BYTES
from app.settings import Role, Settings, get_settings


def create_app(settings: Settings | None = None) -> FastAPI:
    """A configured API; its resources open in the lifespan and close with it."""
    settings = (settings or get_settings()).require(Role.API)
    if settings.sentry_dsn is not None:
        # Imported only when used: it is a quarter of a second of the API's cold start.
        import sentry_sdk

        sentry_sdk.init(
            dsn=settings.sentry_dsn.get_secret_value(), environment=settings.app_env, send_default_pii=False
        )
    api_metrics = ApiMetrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state = await ApiState.open(settings, api_metrics)
        app.state.api = state
        try:
            yield
        finally:
            await state.close()

    app = FastAPI(
        title="Liftoff API",
        version="0.1.0",
        summary="Long-running AI generation jobs, with their state in Postgres.",
        lifespan=lifespan,
        dependencies=[Depends(reject_unknown_query_params)],
    )
    install_error_handlers(app)
    install_openapi(app)
    app.include_router(health.router)
    app.include_router(metrics.router)
    app.include_router(generations.router)
    if settings.fault_error_ratio or settings.fault_delay_ms:
        # Inside the request context, so that the injected 500s and delays are measured.
        app.add_middleware(
            FaultMiddleware, error_ratio=settings.fault_error_ratio, delay_ms=settings.fault_delay_ms
        )
    # Added last, so outermost: refused bodies are logged and measured too.
    app.add_middleware(BodyLimitMiddleware, max_bytes=MAX_BODY_BYTES)
    app.add_middleware(RequestContextMiddleware, metrics=api_metrics, project=settings.google_cloud_project)
    return app
