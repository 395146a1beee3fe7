"""Liveness and readiness probes."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog
from fastapi import APIRouter

from app.api.deps import StateDep
from app.core.errors import ApiError, error_responses
from app.schemas import Health, Readiness

log = structlog.get_logger(__name__)
router = APIRouter(tags=["health"])


@router.get("/health", response_model=Health, summary="Liveness")
async def health() -> Health:
    """The process serves requests. Touches nothing else, so a slow dependency never restarts it."""
    return Health()


@router.get("/ready", response_model=Readiness, summary="Readiness", responses=error_responses(503))
async def ready(state: StateDep) -> Readiness:
    """Postgres and Redis both answer within the timeout; 503 names any that does not."""

    async def postgres() -> None:
        async with state.db.connection() as conn:
            await conn.execute("SELECT 1")

    async def redis() -> None:
        await state.redis.ping()

    checks: dict[str, Callable[[], Awaitable[None]]] = {"postgres": postgres, "redis": redis}
    timeout = state.settings.ready_timeout_seconds
    results = await asyncio.gather(
        *(asyncio.wait_for(check(), timeout) for check in checks.values()), return_exceptions=True
    )
    failed = []
    for name, result in zip(checks, results, strict=True):
        if isinstance(result, BaseException):
            log.warning("dependency_unavailable", dependency=name, error=repr(result))
            failed.append(name)
    if failed:
        raise ApiError(503, "not_ready", f"Unavailable: {', '.join(failed)}.", headers={"Retry-After": "5"})
    return Readiness(checks=dict.fromkeys(checks, "ok"))
