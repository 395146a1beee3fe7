"""Each attempt records the worker revision that ran it; a tenant is kept for release probes.

- `generation_logs.revision`: the Cloud Run worker pool revision (CLOUD_RUN_WORKER_POOL_REVISION)
  whose process wrote the attempt; the release controller judges a candidate worker on its own
  attempts by this column.
- `generations.lease_revision`: the revision holding the job's lease, so that an attempt lost
  with its worker is charged to that worker's revision when the sweep recovers it.
- The probe organization (app/core/probes.py) with a limits row of its own: probe jobs never
  count against a real tenant's limits, nor fall under the defaults, and a leaked probe token
  can submit no faster than the most a release sends (`synthetic.rate` is at most 50 a second).

Expand-safe: two nullable columns no earlier revision reads or writes, and two rows no earlier
revision lists (a tenant sees only its own organization under RLS).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
phase = "expand"


def upgrade() -> None:
    op.add_column("generation_logs", sa.Column("revision", sa.Text))
    op.add_column("generations", sa.Column("lease_revision", sa.Text))
    # No index of its own: the controller reads a window of generation_logs by created_at, which
    # generation_logs_created_idx serves, and a plain CREATE INDEX would hold off every worker's
    # writes to the table while it builds.
    # The organization of app/core/probes.py, its id written out: a migration stays as written.
    op.execute(
        "INSERT INTO organizations (id, name) VALUES"
        " ('00000000-0000-4000-8000-00000000fe01', 'Liftoff release probes') ON CONFLICT (id) DO NOTHING"
    )
    op.execute(
        "INSERT INTO liftoff.tenant_limits (organization_id, max_active_jobs, max_submissions_per_minute)"
        " VALUES ('00000000-0000-4000-8000-00000000fe01', 1000, 3000)"
        " ON CONFLICT (organization_id) DO NOTHING"
    )


def downgrade() -> None:
    probes = "organization_id = '00000000-0000-4000-8000-00000000fe01'"
    for table in ("liftoff.tenant_limits", "generation_logs", "generations"):
        op.execute(f"DELETE FROM {table} WHERE {probes}")  # noqa: S608 (constants only)
    op.execute("DELETE FROM organizations WHERE id = '00000000-0000-4000-8000-00000000fe01'")
    op.drop_column("generations", "lease_revision")
    op.drop_column("generation_logs", "revision")
