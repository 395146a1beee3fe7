"""Retention: delete generation_logs older than N days, in batches (`python -m app cleanup`)."""

from __future__ import annotations

import asyncio

import structlog
from sqlalchemy import text

from app.core.db import create_engine
from app.settings import PoolMode, Settings

log = structlog.get_logger(__name__)

# Small transactions: no long locks, and a pooler's statement timeout is never near.
DEFAULT_BATCH = 5_000

_DELETE_BATCH = text(
    """
    WITH doomed AS (
      SELECT id FROM generation_logs
      WHERE created_at < now() - make_interval(days => :days)
      ORDER BY id
      LIMIT :batch
    )
    DELETE FROM generation_logs g USING doomed WHERE g.id = doomed.id
    """
)


async def delete_old_logs(dsn: str, *, days: int, batch: int = DEFAULT_BATCH) -> int:
    """Delete logs older than `days`; returns how many rows went."""
    if days < 1 or batch < 1:
        raise ValueError("days and batch must be positive")
    engine = create_engine(dsn, pool_mode=PoolMode.NULL, application_name="liftoff-cleanup")
    total = 0
    try:
        while True:
            async with engine.begin() as conn:
                deleted = (await conn.execute(_DELETE_BATCH, {"days": days, "batch": batch})).rowcount
            total += deleted
            if deleted:
                log.info("retention_batch", deleted=deleted, total=total)
            if deleted < batch:
                return total
    finally:
        await engine.dispose()


def run_cleanup(settings: Settings, *, days: int | None = None, batch: int = DEFAULT_BATCH) -> int:
    """Apply the retention policy once; the cloud schedules this."""
    total = asyncio.run(
        delete_old_logs(settings.secret("database_url"), days=days or settings.retention_days, batch=batch)
    )
    log.info("retention_done", deleted=total, days=days or settings.retention_days)
    return total
