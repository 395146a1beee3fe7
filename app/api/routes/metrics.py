"""Prometheus scrape endpoint."""

from __future__ import annotations

import asyncio

import structlog
from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app import crud
from app.api.deps import StateDep

log = structlog.get_logger(__name__)
router = APIRouter(tags=["operations"])


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}, "description": "OK"}},
)
async def metrics(state: StateDep) -> Response:
    """Request counts and latency by route and status, and jobs by status."""
    try:
        async with (
            asyncio.timeout(state.settings.ready_timeout_seconds),
            state.db.connection() as conn,
            # A transaction: behind a transaction pooler, prepare and execute on one backend.
            conn.transaction(),
        ):
            counts = await crud.count_by_status(conn)
        state.metrics.set_jobs(counts)
    except Exception as exc:
        # A scrape still reports request metrics when Postgres is down; job gauges keep their last value.
        log.warning("job_counts_unavailable", error=repr(exc))
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
