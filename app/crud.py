"""Queries on generations. Tenant functions expect a connection from `Database.tenant`."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from app.status import JobStatus

# The public shape of a job (schemas.Generation), as a select list.
GENERATION_COLUMNS = (
    "id, ai_status AS status, prompt, model, params, result, error, attempts, cancel_requested,"
    " created_at, updated_at, started_at, finished_at"
)
Row = dict[str, Any]


def params_json(params: dict[str, Any]) -> str:
    """`params` as jsonb text; ValueError for what JSON (and so jsonb) cannot hold, such as NaN."""
    return json.dumps(params, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _job(row: Any) -> Row:
    # asyncpg hands jsonb over as text: decoded here, for the few columns that are jsonb.
    job = dict(row)
    job["params"] = json.loads(job["params"])
    if job["result"] is not None:
        job["result"] = json.loads(job["result"])
    return job


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


async def submit_generation(
    conn: asyncpg.Connection,
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
) -> tuple[Row, bool]:
    """Insert a queued job, or return the job an earlier request with this key created.

    One statement (migration 0004's liftoff.submit_generation): with `provision`, record the
    organization and member the verified token names; then, as the `authenticated` role with
    the caller's claims, insert under RLS, the tenant limits and the column privileges. Returns
    (job, created). Concurrent requests with one key meet at the unique index: one inserts,
    the others wait for its commit and then read its row.
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
    job = _job(row)
    created = bool(job.pop("created"))
    stored_hash = job.pop("request_hash")
    if not created and stored_hash != body_hash:
        raise IdempotencyConflictError(idempotency_key)
    return job, created


async def get_generation(conn: asyncpg.Connection, org_id: UUID, job_id: UUID) -> Row | None:
    """One of the tenant's jobs, or None."""
    row = await conn.fetchrow(
        f"SELECT {GENERATION_COLUMNS} FROM generations WHERE organization_id = $1 AND id = $2",  # noqa: S608
        org_id,
        job_id,
    )
    return _job(row) if row is not None else None


async def list_generations(
    conn: asyncpg.Connection,
    org_id: UUID,
    *,
    status: JobStatus | None,
    after: tuple[datetime, UUID] | None,
    limit: int,
) -> tuple[list[Row], str | None]:
    """A page of the tenant's jobs, newest first, and the cursor of the next page."""
    conditions: list[str] = ["organization_id = $1"]
    args: list[Any] = [org_id]
    if status is not None:
        args.append(status.value)
        conditions.append(f"ai_status = ${len(args)}")
    if after is not None:
        args += [after[0], after[1]]
        conditions.append(f"(created_at, id) < (${len(args) - 1}, ${len(args)})")
    args.append(limit + 1)
    rows = await conn.fetch(
        f"SELECT {GENERATION_COLUMNS} FROM generations WHERE {' AND '.join(conditions)}"  # noqa: S608
        f" ORDER BY created_at DESC, id DESC LIMIT ${len(args)}",
        *args,
    )
    page = [_job(r) for r in rows]
    if len(page) <= limit:
        return page, None
    last = page[limit - 1]
    return page[:limit], encode_cursor(last["created_at"], last["id"])


async def cancel_generation(conn: asyncpg.Connection, org_id: UUID, job_id: UUID) -> Row | None:
    """Cancel a queued job at once; ask a running one to stop. None if there is no such job.

    Tenants may only set `cancel_requested`; migration 0004's trigger cancels a queued job in
    the same statement. A job already finished comes back unchanged; the caller decides what
    that means.
    """
    row = await conn.fetchrow(
        "UPDATE generations SET cancel_requested = true"  # noqa: S608 (constant column list)
        " WHERE organization_id = $1 AND id = $2 AND ai_status IN ('queued', 'running')"
        f" RETURNING {GENERATION_COLUMNS}",
        org_id,
        job_id,
    )
    if row is not None:
        return _job(row)
    return await get_generation(conn, org_id, job_id)


async def count_by_status(conn: asyncpg.Connection) -> dict[JobStatus, int]:
    """Jobs per status across all tenants (for metrics; needs a non-tenant connection)."""
    rows = await conn.fetch("SELECT ai_status, count(*) AS n FROM generations GROUP BY ai_status")
    counts = dict.fromkeys(JobStatus, 0)
    for row in rows:
        counts[JobStatus(row["ai_status"])] = row["n"]
    return counts
