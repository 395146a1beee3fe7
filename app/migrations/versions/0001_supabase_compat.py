"""Create what Supabase provides, where it is missing: roles anon, authenticated, service_role
and the schema auth with uid() and jwt().

On Supabase every statement here finds its object present and does nothing, so the same
migrations run unchanged on plain Postgres (local, tests) and on a Supabase project.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
phase = "expand"

ROLES = {
    "anon": "NOLOGIN NOINHERIT",
    "authenticated": "NOLOGIN NOINHERIT",
    "service_role": "NOLOGIN NOINHERIT BYPASSRLS",
}

# The definitions Supabase ships (request.jwt.claim.* are the older, per-claim settings).
AUTH_FUNCTIONS = {
    "uid": """
        CREATE FUNCTION auth.uid() RETURNS uuid LANGUAGE sql STABLE AS $fn$
          SELECT coalesce(
            nullif(current_setting('request.jwt.claim.sub', true), ''),
            (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')
          )::uuid
        $fn$
    """,
    "jwt": """
        CREATE FUNCTION auth.jwt() RETURNS jsonb LANGUAGE sql STABLE AS $fn$
          SELECT coalesce(
            nullif(current_setting('request.jwt.claim', true), ''),
            nullif(current_setting('request.jwt.claims', true), '')
          )::jsonb
        $fn$
    """,
}


def upgrade() -> None:
    for role, options in ROLES.items():
        op.execute(
            f"""
            DO $do$ BEGIN
              IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}') THEN
                CREATE ROLE {role} {options};
                -- The migrating user must be able to SET ROLE to the role it created.
                GRANT {role} TO CURRENT_USER;
              END IF;
            END $do$
            """
        )
    op.execute("CREATE SCHEMA IF NOT EXISTS auth")
    op.execute("GRANT USAGE ON SCHEMA auth TO anon, authenticated, service_role")
    for name, ddl in AUTH_FUNCTIONS.items():
        escaped = ddl.replace("'", "''")
        op.execute(
            f"""
            DO $do$ BEGIN
              IF to_regprocedure('auth.{name}()') IS NULL THEN
                EXECUTE '{escaped}';
              END IF;
            END $do$
            """
        )


def downgrade() -> None:
    # Roles and the auth schema may predate this migration (always, on Supabase), and other
    # databases in the cluster may use the roles, so they are left in place.
    pass
