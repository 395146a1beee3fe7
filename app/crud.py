"""Queries on generations. Tenant functions expect a connection from `tenant_transaction`."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import RowMapping, and_, func, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncConnection

from app.models import JobStatus, generations

GENERATION_COLUMNS = (
    generations.c.id,
    generations.c.ai_status.label("status"),
    generations.c.prompt,
    generations.c.model,
    generations.c.params,
    generations.c.result,
    generations.c.error,
    generations.c.attempts,
    generations.c.cancel_requested,
    generations.c.created_at,
    generations.c.updated_at,
    generations.c.started_at,
    generations.c.finished_at,
)


class InvalidCursorError(ValueError):
    """A pagination cursor that this API did not issue."""


class IdempotencyConflictError(Exception):
    """The idempotency key was used before with a different body."""


def request_hash(payload: dict[str, Any]) -> str:
    """A stable digest of a request body: same content, same hash, whatever the key order."""
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def encode_cursor(created_at: datetime, job_id: UUID) -> str:
    """An opaque cursor pointing just past (created_at, id)."""
    raw = json.dumps([created_at.isoformat(), str(job_id)]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, UUID]:
    """The position a cursor points past; InvalidCursorError if it is not one of ours."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created_at, job_id = json.loads(raw)
        position = datetime.fromisoformat(created_at), UUID(job_id)
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError) as exc:
        raise InvalidCursorError(cursor) from exc
    if position[0].tzinfo is None:
        raise InvalidCursorError(cursor)
    return position


SUBMIT_SQL = "SELECT * FROM liftoff.submit_generation($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"


def params_json(params: dict[str, Any]) -> str:
    """`params` as jsonb text; ValueError for what JSON (and so jsonb) cannot hold, such as NaN."""
    return json.dumps(params, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


async def submit_generation(
    conn: Any,
    *,
    claims: dict[str, Any],
    tenant_claim: str,
    provision: bool,
    org_id: UUID,
    user_id: UUID,
    prompt: str,
    model: str,
    params: dict[str, Any],
    idempotency_key: str | None,
    body_hash: str | None,
) -> tuple[dict[str, Any], bool]:
    """Insert a queued job, or return the job an earlier request with this key created.

    One statement (migration 0004's liftoff.submit_generation) on the asyncpg connection of
    an engine (whose json codecs take jsonb as text and return it decoded): with
    `provision`, record the organization and member the verified token names; then, as the
    `authenticated` role with the caller's claims, insert under RLS, the tenant limits and the
    column privileges. Returns (job, created). Concurrent requests with one key meet at the
    unique index: one inserts, the others wait for its commit and then read its row.
    """
    row = await conn.fetchrow(
        SUBMIT_SQL,
        json.dumps(claims, separators=(",", ":")),
        tenant_claim,
        provision,
        org_id,
        user_id,
        prompt,
        model,
        params_json(params),
        idempotency_key,
        body_hash,
    )
    job = dict(row)
    created = bool(job.pop("created"))
    if not created and job.pop("request_hash") != body_hash:
        raise IdempotencyConflictError(idempotency_key)
    job.pop("request_hash", None)
    return job, created


async def get_generation(conn: AsyncConnection, org_id: UUID, job_id: UUID) -> RowMapping | None:
    """One of the tenant's jobs, or None."""
    statement = select(*GENERATION_COLUMNS).where(
        generations.c.organization_id == org_id, generations.c.id == job_id
    )
    return (await conn.execute(statement)).mappings().first()


async def list_generations(
    conn: AsyncConnection,
    org_id: UUID,
    *,
    status: JobStatus | None,
    after: tuple[datetime, UUID] | None,
    limit: int,
) -> tuple[Sequence[RowMapping], str | None]:
    """A page of the tenant's jobs, newest first, and the cursor of the next page."""
    conditions = [generations.c.organization_id == org_id]
    if status is not None:
        conditions.append(generations.c.ai_status == status.value)
    if after is not None:
        conditions.append(tuple_(generations.c.created_at, generations.c.id) < tuple_(*after))
    statement = (
        select(*GENERATION_COLUMNS)
        .where(and_(*conditions))
        .order_by(generations.c.created_at.desc(), generations.c.id.desc())
        .limit(limit + 1)
    )
    rows = (await conn.execute(statement)).mappings().all()
    if len(rows) <= limit:
        return rows, None
    last = rows[limit - 1]
    return rows[:limit], encode_cursor(last["created_at"], last["id"])


async def cancel_generation(conn: AsyncConnection, org_id: UUID, job_id: UUID) -> RowMapping | None:
    """Cancel a queued job at once; ask a running one to stop. None if there is no such job.

    Tenants may only set `cancel_requested`; migration 0004's trigger cancels a queued job in
    the same statement. A job already finished comes back unchanged; the caller decides what
    that means.
    """
    statement = (
        update(generations)
        .where(
            generations.c.organization_id == org_id,
            generations.c.id == job_id,
            generations.c.ai_status.in_([JobStatus.QUEUED.value, JobStatus.RUNNING.value]),
        )
        .values(cancel_requested=True)
        .returning(*GENERATION_COLUMNS)
    )
    row = (await conn.execute(statement)).mappings().first()
    if row is not None:
        return row
    return await get_generation(conn, org_id, job_id)


async def count_by_status(conn: AsyncConnection) -> dict[JobStatus, int]:
    """Jobs per status across all tenants (for metrics; needs a non-tenant connection)."""
    rows = await conn.execute(select(generations.c.ai_status, func.count()).group_by(generations.c.ai_status))
    counts = dict.fromkeys(JobStatus, 0)
    for status, count in rows:
        counts[JobStatus(status)] = count
    return counts
