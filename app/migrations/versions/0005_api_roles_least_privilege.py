"""Supabase's API roles hold nothing of the app's but what docs/api.md lists.

On Supabase, default privileges in `public` grant ALL on every new table, sequence and function
that `postgres` creates to `anon` and `authenticated` (supabase/postgres,
migrations/db/init-scripts/00000000000000-initial-schema.sql), and PostgreSQL grants EXECUTE on
every new function to PUBLIC. Migration 0004 revoked on the four tables only, which left:

- `generation_logs_id_seq` (the identity of generation_logs): SELECT, UPDATE, USAGE for both
  roles;
- `alembic_version`, which Alembic creates in `public`: ALL for both roles, without RLS, so
  any holder of the project's anon key could rewrite it through the REST API. RLS is turned
  on as well, with no policy: the owner migrating is not subject to it, and Supabase's
  database linter flags a public table without it (lint 0013_rls_disabled_in_public);
- EXECUTE on the functions in `liftoff` for every role, and USAGE on that schema for `anon`.
  `authenticated` keeps EXECUTE on the two functions its policies and the limits trigger
  call; trigger functions need no EXECUTE from whoever fires them.

New objects are made safe where they are created, not by default privileges: each migration
that creates a table, sequence or function revokes it from anon and authenticated (functions:
from PUBLIC) and grants back what docs/api.md documents, as 0004 and this one do, and
tests/app/test_privileges.py fails on any grant the page does not list, on a database set up
as Supabase sets one up. `ALTER DEFAULT PRIVILEGES FOR ROLE postgres ... REVOKE` would do it
implicitly, but for every object `postgres` creates in `public`: on Supabase that is also the
role of the dashboard's table editor and SQL editor, so it would change, unannounced, how the
project's other tables are exposed.

Expand-safe: the running release uses none of what is revoked.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
phase = "expand"

# Called as `authenticated`: claim_org_id by every RLS policy, default_limits_id by the limits
# trigger (which runs as whoever inserts).
TENANT_FUNCTIONS = ("liftoff.claim_org_id(jsonb)", "liftoff.default_limits_id()")


def upgrade() -> None:
    op.execute("REVOKE ALL ON SEQUENCE generation_logs_id_seq FROM anon, authenticated")
    op.execute("REVOKE ALL ON alembic_version FROM anon, authenticated")
    op.execute("ALTER TABLE alembic_version ENABLE ROW LEVEL SECURITY")
    op.execute("REVOKE USAGE ON SCHEMA liftoff FROM anon")
    op.execute("REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA liftoff FROM PUBLIC, anon, authenticated")
    op.execute(f"GRANT EXECUTE ON FUNCTION {', '.join(TENANT_FUNCTIONS)} TO authenticated, service_role")


def downgrade() -> None:
    # Back to what 0002 and 0004 granted. What Supabase's default privileges handed out
    # (the sequence, alembic_version) is not handed out again.
    op.execute(f"REVOKE EXECUTE ON FUNCTION {', '.join(TENANT_FUNCTIONS)} FROM authenticated, service_role")
    op.execute("GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA liftoff TO PUBLIC")
    op.execute(
        "REVOKE EXECUTE ON FUNCTION liftoff.submit_generation(text, text, boolean, uuid, uuid, text, text,"
        " jsonb, text, text) FROM PUBLIC"
    )
    op.execute("GRANT USAGE ON SCHEMA liftoff TO anon")
    op.execute("ALTER TABLE alembic_version DISABLE ROW LEVEL SECURITY")
