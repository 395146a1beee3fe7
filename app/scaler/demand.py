"""The queue's demand, read from Postgres as the scaler's own role."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.scaler.policy import Demand

# The one function the role may run (migration 0008); a statement timeout keeps a slow database
# from holding a reconcile, which Cloud Scheduler would only start again a minute later.
_DEMAND = text("SELECT queued, running, idle_seconds, oldest_queued_seconds FROM liftoff.queue_demand()")
ROLE = "liftoff_scaler"


class PostgresDemand:
    """Reads `liftoff.queue_demand()` in a transaction confined to `liftoff_scaler`."""

    def __init__(self, engine: AsyncEngine, statement_timeout_ms: int = 5_000) -> None:
        self.engine = engine
        self.statement_timeout_ms = statement_timeout_ms

    async def read(self) -> Demand:
        async with self.engine.begin() as conn:
            await conn.execute(text(f"SET LOCAL ROLE {ROLE}"))
            await conn.execute(text(f"SET LOCAL statement_timeout = {int(self.statement_timeout_ms)}"))
            row = (await conn.execute(_DEMAND)).one()
        idle = None if row.idle_seconds is None else max(0.0, float(row.idle_seconds))
        return Demand(
            queued=int(row.queued),
            running=int(row.running),
            idle_seconds=idle,
            oldest_queued_seconds=max(0.0, float(row.oldest_queued_seconds)),
        )
