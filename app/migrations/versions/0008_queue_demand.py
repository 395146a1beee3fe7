"""What the worker pool's scaler reads: how many jobs are queued or running, how long the oldest
has waited, and how long since the last attempt ended; nothing else.

`liftoff.queue_demand()` is SECURITY DEFINER, so the scaler needs no grant on any table: the
role `liftoff_scaler` (NOLOGIN; the scaler sets it for its one transaction, app/scaler/demand.py)
may EXECUTE it and nothing more. Its counts use the partial indexes on queued and running jobs
(0003), and the last attempt's time the index on generation_logs.created_at (0002).

PostgreSQL grants EXECUTE on a new function to PUBLIC, and Supabase's default privileges in
`liftoff`'s owner grant it to anon, authenticated and service_role: all are revoked here
(0005, "New objects are made safe where they are created"), so no API key can read the queue.

The oldest job's wait is what the queue-age alert reads (components/monitoring.py): the scaler
logs it on every reconcile, so the alert sees a stuck queue even when no worker runs to log it.

The scaler connects as the app's own role (DATABASE_URL; `postgres` on Supabase, the role that
runs this migration there too), which must be able to SET ROLE to it: on PostgreSQL 16 and later
a non-superuser that creates a role holds it with ADMIN OPTION only, without SET, so the role is
granted to the migrating role here. It inherits nothing it did not have: EXECUTE on a function it
owns, USAGE on a schema it owns.

Roles belong to the cluster: the role is created only where missing, and the downgrade keeps it.

Expand-safe: a function and a role no earlier revision uses.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
phase = "expand"

SCALER = "liftoff_scaler"
FUNCTION = "liftoff.queue_demand()"


def upgrade() -> None:
    op.execute(
        f"DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{SCALER}') THEN"
        f" CREATE ROLE {SCALER} NOLOGIN; END IF; END $$"
    )
    op.execute(
        """
        CREATE FUNCTION liftoff.queue_demand(
            OUT queued bigint,
            OUT running bigint,
            OUT idle_seconds double precision,
            OUT oldest_queued_seconds double precision
        )
        LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp
        AS $$
            SELECT (SELECT count(*) FROM public.generations WHERE ai_status = 'queued'),
                   (SELECT count(*) FROM public.generations WHERE ai_status = 'running'),
                   extract(epoch FROM now() - (SELECT max(created_at) FROM public.generation_logs))::float8,
                   coalesce(extract(epoch FROM now() - (
                       SELECT min(created_at) FROM public.generations WHERE ai_status = 'queued'
                   ))::float8, 0)
        $$
        """
    )
    op.execute(f"REVOKE ALL ON FUNCTION {FUNCTION} FROM PUBLIC, anon, authenticated, service_role")
    op.execute(f"GRANT {SCALER} TO CURRENT_USER")
    op.execute(f"GRANT USAGE ON SCHEMA liftoff TO {SCALER}")
    op.execute(f"GRANT EXECUTE ON FUNCTION {FUNCTION} TO {SCALER}")


def downgrade() -> None:
    op.execute(f"DROP FUNCTION {FUNCTION}")
    op.execute(f"REVOKE USAGE ON SCHEMA liftoff FROM {SCALER}")
    op.execute(f"REVOKE {SCALER} FROM CURRENT_USER")
