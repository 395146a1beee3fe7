"""The job queue in Postgres: SKIP LOCKED claims under a lease, and idempotent final writes.

Every state change is one statement, and every attempt leaves one generation_logs row:
written by the worker that ran it, or, if that worker died, by whoever recovers the lease.
A final write only lands while its attempt still holds the lease, so a job has one result.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any
from uuid import UUID

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

LOST_LEASE_ERROR = "lease expired: the worker stopped responding"


@dataclass(frozen=True, slots=True)
class ClaimedJob:
    """A job this worker holds the lease on, for one attempt."""

    id: UUID
    organization_id: UUID
    prompt: str
    model: str
    params: dict[str, Any]
    attempt: int
    started_at: datetime


class Outcome(StrEnum):
    """How an attempt ended; also the generation_logs status."""

    SUCCEEDED = "succeeded"
    RETRY = "retry"
    FAILED = "failed"
    CANCELLED = "cancelled"
    RELEASED = "released"


TERMINAL_OUTCOMES = frozenset({Outcome.SUCCEEDED, Outcome.FAILED, Outcome.CANCELLED})

# The job's status after each outcome.
_NEXT_STATUS = {
    Outcome.SUCCEEDED: "succeeded",
    Outcome.RETRY: "queued",
    Outcome.FAILED: "failed",
    Outcome.CANCELLED: "cancelled",
    Outcome.RELEASED: "queued",
}

_CLAIM = text(
    """
    WITH ready AS (
      SELECT id FROM generations
      WHERE ai_status = 'queued' AND run_after <= now()
      ORDER BY run_after, created_at
      LIMIT :limit
      FOR UPDATE SKIP LOCKED
    )
    UPDATE generations g
    SET ai_status = 'running',
        attempts = g.attempts + 1,
        leased_by = :worker,
        lease_revision = :revision,
        lease_expires_at = now() + make_interval(secs => :lease),
        started_at = coalesce(g.started_at, now()),
        updated_at = now()
    FROM ready
    WHERE g.id = ready.id
    RETURNING g.id, g.organization_id, g.prompt, g.model, g.params, g.attempts, g.updated_at
    """
)

_RECOVER = text(
    """
    WITH expired AS (
      SELECT id, updated_at AS attempt_started, lease_revision FROM generations
      WHERE ai_status = 'running' AND lease_expires_at < now()
      ORDER BY lease_expires_at
      LIMIT :limit
      FOR UPDATE SKIP LOCKED
    ), recovered AS (
      UPDATE generations g
      SET ai_status = CASE WHEN g.cancel_requested THEN 'cancelled'
                           WHEN g.attempts >= :max_attempts THEN 'failed'
                           ELSE 'queued' END,
          error = CASE WHEN g.cancel_requested THEN g.error ELSE :lost_error END,
          finished_at = CASE WHEN g.cancel_requested OR g.attempts >= :max_attempts THEN now() END,
          run_after = now(),
          lease_expires_at = NULL,
          leased_by = NULL,
          lease_revision = NULL,
          updated_at = now()
      FROM expired
      WHERE g.id = expired.id
      RETURNING g.id, g.organization_id, g.attempts, g.ai_status, expired.attempt_started,
                expired.lease_revision
    ), logged AS (
      INSERT INTO generation_logs
        (generation_id, organization_id, attempt, status, provider,
         started_at, finished_at, duration_ms, error, revision)
      SELECT id, organization_id, attempts, 'lost', :provider, attempt_started, now(),
             (extract(epoch FROM now() - attempt_started) * 1000)::int, :lost_error, lease_revision
      FROM recovered
    )
    SELECT id, ai_status FROM recovered
    """
)

_HEARTBEAT = text(
    """
    UPDATE generations
    SET lease_expires_at = now() + make_interval(secs => :lease)
    WHERE id = ANY(:ids) AND leased_by = :worker AND ai_status = 'running'
    RETURNING id, cancel_requested
    """
)

# One statement finishes a batch of attempts: jobs that end together are written together.
_FINISH = text(
    """
    WITH input AS (
      SELECT * FROM unnest(
        CAST(:ids AS uuid[]), CAST(:attempts AS int[]), CAST(:statuses AS text[]),
        CAST(:outcomes AS text[]), CAST(:results AS jsonb[]), CAST(:errors AS text[]),
        CAST(:refunds AS int[]), CAST(:delays AS float8[]), CAST(:terminals AS bool[]),
        CAST(:started AS timestamptz[]), CAST(:providers AS text[])
      ) AS t(id, attempt, status, outcome, result, error, refund, delay, terminal, started_at, provider)
    ), done AS (
      UPDATE generations g
      SET ai_status = i.status,
          result = i.result,
          error = i.error,
          attempts = g.attempts - i.refund,
          run_after = now() + make_interval(secs => i.delay),
          finished_at = CASE WHEN i.terminal THEN now() END,
          lease_expires_at = NULL,
          leased_by = NULL,
          lease_revision = NULL,
          updated_at = now()
      FROM input i
      WHERE g.id = i.id AND g.leased_by = :worker AND g.attempts = i.attempt AND g.ai_status = 'running'
      RETURNING g.id, g.organization_id, i.attempt, i.outcome, i.started_at, i.error, i.provider
    )
    INSERT INTO generation_logs
      (generation_id, organization_id, attempt, status, provider,
       started_at, finished_at, duration_ms, error, revision)
    SELECT id, organization_id, attempt, outcome, provider, started_at, now(),
           (extract(epoch FROM now() - started_at) * 1000)::int, error, :revision
    FROM done
    RETURNING generation_id
    """
)

_QUEUE_STATS = text(
    """
    SELECT count(*) AS depth,
           coalesce(extract(epoch FROM now() - min(created_at)), 0) AS oldest_age
    FROM generations WHERE ai_status = 'queued'
    """
)


async def claim(
    conn: AsyncConnection, *, worker: str, limit: int, lease_seconds: float, revision: str
) -> list[ClaimedJob]:
    """Take up to `limit` ready jobs, oldest first, skipping rows other workers are claiming.

    The lease records the worker's revision: an attempt lost with its worker is that revision's.
    """
    rows = await conn.execute(
        _CLAIM, {"worker": worker, "limit": limit, "lease": lease_seconds, "revision": revision}
    )
    return [
        ClaimedJob(
            id=row.id,
            organization_id=row.organization_id,
            prompt=row.prompt,
            model=row.model,
            params=row.params,
            attempt=row.attempts,
            started_at=row.updated_at,
        )
        for row in rows
    ]


async def recover_expired(
    conn: AsyncConnection, *, max_attempts: int, provider: str, limit: int = 100
) -> list[tuple[UUID, str]]:
    """Return jobs of dead workers to the queue (or fail them, out of attempts), logging each lost attempt."""
    rows = await conn.execute(
        _RECOVER,
        {"limit": limit, "max_attempts": max_attempts, "provider": provider, "lost_error": LOST_LEASE_ERROR},
    )
    return [(row.id, row.ai_status) for row in rows]


async def heartbeat(
    conn: AsyncConnection, *, worker: str, job_ids: list[UUID], lease_seconds: float
) -> dict[UUID, bool]:
    """Extend the leases still held; for each, whether a cancel was asked. Missing ids were lost."""
    rows = await conn.execute(_HEARTBEAT, {"ids": job_ids, "worker": worker, "lease": lease_seconds})
    return {row.id: row.cancel_requested for row in rows}


@dataclass(frozen=True, slots=True)
class Finish:
    """How one attempt ended, to be written."""

    job: ClaimedJob
    outcome: Outcome
    result: Any = None
    error: str | None = None
    retry_in: float = 0.0
    # The provider that ran the attempt, when it is not the worker's own (a probe's).
    provider: str | None = None


async def finish(
    conn: AsyncConnection, finishes: list[Finish], *, worker: str, provider: str, revision: str
) -> set[UUID]:
    """Record how these attempts ended, in one statement. Returns the ids written: an attempt
    missing from it had lost its lease, and another attempt owns that job now."""
    if not finishes:
        return set()
    rows = await conn.execute(
        _FINISH,
        {
            "worker": worker,
            "revision": revision,
            "providers": [f.provider or provider for f in finishes],
            "ids": [f.job.id for f in finishes],
            "attempts": [f.job.attempt for f in finishes],
            "statuses": [_NEXT_STATUS[f.outcome] for f in finishes],
            "outcomes": [f.outcome.value for f in finishes],
            "results": [json.dumps(f.result) if f.outcome is Outcome.SUCCEEDED else None for f in finishes],
            "errors": [f.error for f in finishes],
            # A release gives the attempt back: the job did not fail, the worker went away.
            "refunds": [1 if f.outcome is Outcome.RELEASED else 0 for f in finishes],
            "delays": [f.retry_in for f in finishes],
            "terminals": [f.outcome in TERMINAL_OUTCOMES for f in finishes],
            "started": [f.job.started_at for f in finishes],
        },
    )
    return {row.generation_id for row in rows}


async def queue_stats(conn: AsyncConnection) -> tuple[int, float]:
    """How many jobs wait, and the age in seconds of the oldest."""
    row = (await conn.execute(_QUEUE_STATS)).one()
    return int(row.depth), float(row.oldest_age)
