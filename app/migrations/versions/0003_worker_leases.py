"""Columns the worker's queue needs: when a job may run next, and who holds it until when.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
phase = "expand"


def upgrade() -> None:
    op.add_column(
        "generations",
        sa.Column("run_after", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    )
    op.add_column("generations", sa.Column("lease_expires_at", sa.DateTime(timezone=True)))
    op.add_column("generations", sa.Column("leased_by", sa.Text))
    op.drop_index("generations_queued_idx", table_name="generations")
    # Claims: the ready queued jobs in order, and the running jobs whose lease ran out.
    op.create_index(
        "generations_ready_idx",
        "generations",
        ["run_after", "created_at"],
        postgresql_where=sa.text("ai_status = 'queued'"),
    )
    op.create_index(
        "generations_lease_idx",
        "generations",
        ["lease_expires_at"],
        postgresql_where=sa.text("ai_status = 'running'"),
    )


def downgrade() -> None:
    op.drop_index("generations_lease_idx", table_name="generations")
    op.drop_index("generations_ready_idx", table_name="generations")
    op.create_index(
        "generations_queued_idx",
        "generations",
        ["created_at"],
        postgresql_where=sa.text("ai_status = 'queued'"),
    )
    op.drop_column("generations", "leased_by")
    op.drop_column("generations", "lease_expires_at")
    op.drop_column("generations", "run_after")
