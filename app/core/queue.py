"""The work signal in Redis. Postgres holds the jobs; Redis only says "look now".

A job id pushed here is a hint, never the job itself: losing it (FLUSHALL, eviction, a restart
without persistence) only delays the job until the next Postgres sweep.
"""

from __future__ import annotations

from collections.abc import Iterable
from uuid import UUID

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

log = structlog.get_logger(__name__)

QUEUE_KEY = "liftoff:jobs"


async def signal_ready(redis: Redis, job_ids: Iterable[UUID]) -> bool:
    """Wake an idle worker for these jobs: one LPUSH. False (and a log line) if Redis failed."""
    ids = [str(job_id) for job_id in job_ids]
    if not ids:
        return True
    try:
        await redis.lpush(QUEUE_KEY, *ids)
    except (RedisError, OSError) as exc:
        log.warning("queue_signal_failed", jobs=len(ids), error=repr(exc))
        return False
    return True
