"""Table definitions. Alembic owns the schema; these mirror it for queries."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Identity,
    Integer,
    MetaData,
    Table,
    Text,
    Uuid,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

# Re-exported: the worker and the tests name the statuses from here.
from app.status import TERMINAL, JobStatus

__all__ = [
    "TERMINAL",
    "JobStatus",
    "generation_logs",
    "generations",
    "metadata",
    "organization_members",
    "organizations",
]


metadata = MetaData()

organizations = Table(
    "organizations",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("name", Text),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

organization_members = Table(
    "organization_members",
    metadata,
    Column("organization_id", Uuid, ForeignKey("organizations.id", ondelete="CASCADE"), primary_key=True),
    Column("user_id", Uuid, primary_key=True),
    Column("role", Text, nullable=False, server_default="member"),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

generations = Table(
    "generations",
    metadata,
    Column("id", Uuid, primary_key=True, server_default=text("gen_random_uuid()")),
    Column("organization_id", Uuid, ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False),
    Column("created_by", Uuid, nullable=False),
    Column("prompt", Text, nullable=False),
    Column("model", Text, nullable=False),
    Column("params", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("ai_status", Text, nullable=False, server_default=JobStatus.QUEUED.value),
    Column("idempotency_key", Text),
    Column("request_hash", Text),
    Column("result", JSONB),
    Column("error", Text),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("cancel_requested", Boolean, nullable=False, server_default=text("false")),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("started_at", DateTime(timezone=True)),
    Column("finished_at", DateTime(timezone=True)),
    Column("run_after", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("lease_expires_at", DateTime(timezone=True)),
    Column("leased_by", Text),
)

generation_logs = Table(
    "generation_logs",
    metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column("generation_id", Uuid, ForeignKey("generations.id", ondelete="CASCADE"), nullable=False),
    Column("organization_id", Uuid, nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("status", Text, nullable=False),
    Column("provider", Text, nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True)),
    Column("duration_ms", Integer),
    Column("error", Text),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)
