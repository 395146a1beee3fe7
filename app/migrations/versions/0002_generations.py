"""Organizations, members, generations and generation_logs, isolated per tenant by RLS.

Policies follow Supabase: auth.uid() is the caller, auth.jwt() carries the organization id
at the claim path the API is configured with (liftoff.tenant_claim, set per transaction).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
phase = "expand"

STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
TABLES = ("organizations", "organization_members", "generations", "generation_logs")

# Wrapped in (SELECT ...) so Postgres evaluates it once per statement, not once per row.
ORG = "(SELECT liftoff.claim_org_id(auth.jwt()))"
UID = "(SELECT auth.uid())"


def _timestamps() -> list[sa.Column[Any]]:
    return [sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now())]


def upgrade() -> None:
    _claim_function()
    _organizations()
    _generations()
    _generation_logs()
    _row_level_security()


def _claim_function() -> None:
    op.execute("CREATE SCHEMA IF NOT EXISTS liftoff")
    op.execute("GRANT USAGE ON SCHEMA liftoff TO anon, authenticated, service_role")
    # A malformed claim yields NULL (no rows), never an error that would fail the request.
    op.execute(
        r"""
        CREATE OR REPLACE FUNCTION liftoff.claim_org_id(claims jsonb) RETURNS uuid
        LANGUAGE sql STABLE AS $fn$
          SELECT CASE WHEN raw ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
                      THEN raw::uuid END
          FROM (SELECT claims #>> string_to_array(
                  coalesce(nullif(current_setting('liftoff.tenant_claim', true), ''),
                           'app_metadata.organization_id'), '.') AS raw) AS c
        $fn$
        """
    )


def _organizations() -> None:
    op.create_table(
        "organizations",
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("name", sa.Text),
        *_timestamps(),
    )
    op.create_table(
        "organization_members",
        sa.Column(
            "organization_id",
            sa.Uuid,
            sa.ForeignKey("organizations.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("user_id", sa.Uuid, primary_key=True),
        sa.Column("role", sa.Text, nullable=False, server_default="member"),
        *_timestamps(),
    )
    op.create_index("organization_members_user_idx", "organization_members", ["user_id"])


def _generations() -> None:
    op.create_table(
        "generations",
        sa.Column("id", sa.Uuid, primary_key=True, server_default=sa.text("gen_random_uuid()")),
        sa.Column(
            "organization_id",
            sa.Uuid,
            sa.ForeignKey("organizations.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("created_by", sa.Uuid, nullable=False),
        sa.Column("prompt", sa.Text, nullable=False),
        sa.Column("model", sa.Text, nullable=False),
        sa.Column("params", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("ai_status", sa.Text, nullable=False, server_default="queued"),
        sa.Column("idempotency_key", sa.Text),
        sa.Column("request_hash", sa.Text),
        sa.Column("result", JSONB),
        sa.Column("error", sa.Text),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("cancel_requested", sa.Boolean, nullable=False, server_default=sa.text("false")),
        *_timestamps(),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("started_at", sa.DateTime(timezone=True)),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.CheckConstraint(f"ai_status IN {STATUSES}", name="generations_ai_status_check"),
        sa.CheckConstraint(
            "(idempotency_key IS NULL) = (request_hash IS NULL)", name="generations_idem_check"
        ),
    )
    op.create_index(
        "generations_idempotency_uq",
        "generations",
        ["organization_id", "idempotency_key"],
        unique=True,
        postgresql_where=sa.text("idempotency_key IS NOT NULL"),
    )
    # Keyset pagination: newest first within a tenant, optionally by status.
    op.create_index("generations_org_page_idx", "generations", ["organization_id", "created_at", "id"])
    op.create_index(
        "generations_org_status_page_idx", "generations", ["organization_id", "ai_status", "created_at", "id"]
    )
    op.create_index(
        "generations_queued_idx",
        "generations",
        ["created_at"],
        postgresql_where=sa.text("ai_status = 'queued'"),
    )


def _generation_logs() -> None:
    op.create_table(
        "generation_logs",
        sa.Column("id", sa.BigInteger, sa.Identity(always=True), primary_key=True),
        sa.Column(
            "generation_id",
            sa.Uuid,
            sa.ForeignKey("generations.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("organization_id", sa.Uuid, nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("provider", sa.Text, nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.Column("duration_ms", sa.Integer),
        sa.Column("error", sa.Text),
        *_timestamps(),
    )
    op.create_index("generation_logs_generation_idx", "generation_logs", ["generation_id", "attempt"])
    op.create_index("generation_logs_created_idx", "generation_logs", ["created_at"])


def _row_level_security() -> None:
    for table in TABLES:
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        op.execute(f"GRANT ALL ON {table} TO service_role")
    op.execute("GRANT SELECT ON organizations, organization_members, generation_logs TO authenticated")
    op.execute("GRANT SELECT, INSERT ON generations TO authenticated")
    # Tenants may cancel; everything else about a job's progress is the worker's to write.
    op.execute(
        "GRANT UPDATE (ai_status, cancel_requested, updated_at, finished_at) ON generations TO authenticated"
    )

    op.execute(
        f"CREATE POLICY organizations_select ON organizations FOR SELECT TO authenticated USING (id = {ORG})"
    )
    op.execute(
        "CREATE POLICY organization_members_select ON organization_members FOR SELECT TO authenticated"
        f" USING (user_id = {UID} OR organization_id = {ORG})"
    )
    op.execute(
        "CREATE POLICY generations_select ON generations FOR SELECT TO authenticated"
        f" USING (organization_id = {ORG})"
    )
    op.execute(
        "CREATE POLICY generations_insert ON generations FOR INSERT TO authenticated"
        f" WITH CHECK (organization_id = {ORG} AND created_by = {UID})"
    )
    op.execute(
        "CREATE POLICY generations_update ON generations FOR UPDATE TO authenticated"
        f" USING (organization_id = {ORG}) WITH CHECK (organization_id = {ORG})"
    )
    op.execute(
        "CREATE POLICY generation_logs_select ON generation_logs FOR SELECT TO authenticated"
        f" USING (organization_id = {ORG})"
    )


def downgrade() -> None:
    for table in reversed(TABLES):
        op.drop_table(table)
    op.execute("DROP FUNCTION IF EXISTS liftoff.claim_org_id(jsonb)")
    op.execute("DROP SCHEMA IF EXISTS liftoff")
