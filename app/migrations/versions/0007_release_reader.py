"""A role for the release controller: it reads each worker revision's attempts, and the schema's
revision, and nothing else.

The controller judges a candidate worker on `generation_logs` per revision, and reads
`alembic_version` to know which contract migrations the database has not run. Both tables have
row level security on, with policies only for `authenticated`, so a plain SELECT grant would
see no rows. `liftoff_release_reader` (NOLOGIN) gets SELECT on the columns the query reads
(no tenant, no prompt, no error text) and a policy that shows it every row; the login role in
`LIFTOFF_JOBS_DATABASE_URL` is made a member of it (docs/deploy.md).

Roles belong to the cluster, not the database: the role is created only where it is missing,
and the downgrade leaves it (other databases of the cluster may grant it something).

Expand-safe: a role, grants and policies no earlier revision uses.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
phase = "expand"

READER = "liftoff_release_reader"
COLUMNS = "revision, status, duration_ms, created_at"


def upgrade() -> None:
    op.execute(
        f"DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{READER}') THEN"
        f" CREATE ROLE {READER} NOLOGIN; END IF; END $$"
    )
    op.execute(f"GRANT USAGE ON SCHEMA public TO {READER}")
    op.execute(f"GRANT SELECT ({COLUMNS}) ON generation_logs TO {READER}")
    op.execute(f"GRANT SELECT ON alembic_version TO {READER}")
    op.execute(
        f"CREATE POLICY generation_logs_release_reader ON generation_logs FOR SELECT TO {READER} USING (true)"
    )
    op.execute(
        f"CREATE POLICY alembic_version_release_reader ON alembic_version FOR SELECT TO {READER} USING (true)"
    )


def downgrade() -> None:
    op.execute("DROP POLICY alembic_version_release_reader ON alembic_version")
    op.execute("DROP POLICY generation_logs_release_reader ON generation_logs")
    op.execute("REVOKE SELECT ON alembic_version FROM liftoff_release_reader")
    op.execute(
        "REVOKE SELECT (revision, status, duration_ms, created_at) ON generation_logs"
        " FROM liftoff_release_reader"
    )
    op.execute(f"REVOKE USAGE ON SCHEMA public FROM {READER}")
