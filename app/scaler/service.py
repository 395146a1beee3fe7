"""The scaler's HTTP service: POST /wake, POST /reconcile, GET /health."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from typing import Protocol

import httpx
import structlog
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError

from app.core.db import engine_for
from app.scaler.demand import PostgresDemand
from app.scaler.policy import Demand, PoolState, ScalePolicy, decide
from app.scaler.pools import CloudRunPool, LocalPool, Pool, PoolError
from app.settings import Settings

log = structlog.get_logger(__name__)

# Cloud Scheduler asks again each minute, so a reconcile that failed is retried by then.
RETRY_AFTER_SECONDS = 60


class DemandReader(Protocol):
    async def read(self) -> Demand: ...


@dataclass(frozen=True)
class Outcome:
    """One reconcile: the count before and after, the demand, and why."""

    before: int
    instances: int
    reason: str
    queued: int
    running: int


class Scaler:
    """One reconcile at a time: read the demand and the pool, set the count if it differs."""

    def __init__(self, demand: DemandReader, pool: Pool, policy: ScalePolicy) -> None:
        self.demand = demand
        self.pool = pool
        self.policy = policy
        self._lock = asyncio.Lock()

    async def reconcile(self, cause: str) -> Outcome:
        # Serialized: a wake and a scheduled run at once must not resize from the same stale count.
        async with self._lock:
            demand = await self.demand.read()
            # The queue-age alert reads these lines (a log-based metric), from the worker while one
            # runs and from here always: a pool at zero that does not wake is a queue that ages.
            log.info(
                "queue_stats",
                depth=demand.queued,
                oldest_age_seconds=round(demand.oldest_queued_seconds, 1),
                source="scaler",
            )
            state: PoolState = await self.pool.read()
            decision = decide(demand, state, self.policy)
            if decision.instances != state.instances:
                await self.pool.resize(decision.instances)
                log.info(
                    "pool_resized",
                    cause=cause,
                    before=state.instances,
                    instances=decision.instances,
                    reason=decision.reason,
                    queued=demand.queued,
                    running=demand.running,
                )
            return Outcome(
                state.instances, decision.instances, decision.reason, demand.queued, demand.running
            )


def policy_of(settings: Settings) -> ScalePolicy:
    return ScalePolicy(
        min_instances=settings.scaler_min_instances,
        max_instances=settings.scaler_max_instances,
        idle_seconds=settings.scaler_idle_seconds,
        concurrency=settings.worker_concurrency,
    )


def pool_of(settings: Settings) -> Pool:
    name = settings.scaler_pool
    if name is None:
        raise ValueError("SCALER_POOL is not set")
    if name == "local":
        return LocalPool(os.environ, start_delay=settings.scaler_start_delay_seconds)
    return CloudRunPool(name, httpx.AsyncClient(follow_redirects=False))


def create_scaler_app(settings: Settings, scaler: Scaler | None = None) -> FastAPI:
    """The service; `scaler` replaces the one built from the settings (tests)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = None
        own = scaler
        if own is None:
            engine = engine_for(settings, application_name="liftoff-scaler")
            own = Scaler(PostgresDemand(engine), pool_of(settings), policy_of(settings))
        app.state.scaler = own
        loop = None
        if settings.scaler_interval_seconds > 0:
            loop = asyncio.create_task(_every(own, settings.scaler_interval_seconds))
        try:
            yield
        finally:
            if loop is not None:
                loop.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await loop
            if scaler is None:
                await own.pool.aclose()
            if engine is not None:
                await engine.dispose()

    app = FastAPI(title="liftoff scaler", lifespan=lifespan, openapi_url=None)

    async def answer(cause: str) -> JSONResponse:
        try:
            outcome = await app.state.scaler.reconcile(cause)
        except (PoolError, OSError, TimeoutError, SQLAlchemyError) as exc:
            log.warning("reconcile_failed", cause=cause, error=repr(exc))
            return JSONResponse(
                {"error": "unavailable", "message": f"the pool could not be reconciled: {exc}"},
                status_code=503,
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            )
        return JSONResponse(asdict(outcome))

    @app.post("/wake")
    async def wake() -> JSONResponse:
        """A job was accepted: start what the queue needs now, not at the next scheduled run."""
        return await answer("wake")

    @app.post("/reconcile")
    async def reconcile() -> JSONResponse:
        """The scheduled run: up to the queue's needs, or down to the floor once idle."""
        return await answer("schedule")

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    return app


async def _every(scaler: Scaler, seconds: float) -> None:
    """The local system's own schedule (Cloud Scheduler's in the cloud)."""
    while True:
        try:
            await scaler.reconcile("interval")
        except Exception as exc:  # noqa: BLE001 - a loop that stops would strand the queue
            log.warning("reconcile_failed", cause="interval", error=repr(exc))
        await asyncio.sleep(seconds)
