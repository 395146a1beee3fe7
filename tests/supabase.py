"""A local cluster set up the way Supabase sets up a project's database: roles, grants and
default privileges, no extensions and no other schemas.

Written from the facts of Supabase's own setup files, supabase/postgres at commit
7db7e1a9e34b9ffb9b0e3372ccf08eb4fa772f4b:

- migrations/db/migrate.sh: the cluster's superuser is `supabase_admin`; `postgres` is created
  as a superuser that owns the database `postgres`, runs the init scripts, and is then
  demoted by the migrations, which run as `supabase_admin`.
- migrations/db/init-scripts/00000000000000-initial-schema.sql: roles `anon`,
  `authenticated` (NOLOGIN NOINHERIT) and `service_role` (also BYPASSRLS); `authenticator`,
  a member of the three; USAGE on `public` for them; default privileges in `public` granting
  ALL on new tables, functions and sequences to postgres, anon, authenticated and
  service_role, for objects `postgres` creates and for those `supabase_admin` creates;
  statement timeouts of 3 s for anon and 8 s for authenticated.
- migrations/db/init-scripts/00000000000001-auth-schema.sql: schema `auth` owned by
  `supabase_admin`, with USAGE for the three API roles; `supabase_auth_admin`.
- migrations/db/migrations/20211124212715_update-auth-owner.sql: the auth functions belong
  to `supabase_auth_admin`.
- migrations/db/migrations/20211115181400_update-auth-permissions.sql: `postgres` gets USAGE
  on `auth` and ALL on its routines, without grant option.
- migrations/db/migrations/10000000000000_demote-postgres.sql: `postgres` becomes NOSUPERUSER
  CREATEDB CREATEROLE LOGIN REPLICATION BYPASSRLS, with ALL on the database.
- migrations/db/migrations/20230201083204_grant_auth_roles_to_postgres.sql: `postgres` is a
  member of anon, authenticated and service_role.
- migrations/db/migrations/20230529180330_alter_api_roles_for_inherit.sql: the three API roles
  become INHERIT.

auth.uid() and auth.jwt() are the definitions Supabase Auth installs today (supabase/auth,
migrations/20220224000811_update_auth_functions.up.sql and
migrations/20220531120530_add_auth_jwt_function.up.sql); the init script's first uid() read
only `request.jwt.claim.sub`.
"""

from __future__ import annotations

import asyncpg

SUPERUSER = "supabase_admin"
API_ROLES = "anon, authenticated, service_role"

# As supabase_admin, before the init scripts (migrate.sh).
BOOTSTRAP = [
    "CREATE ROLE postgres SUPERUSER LOGIN",
    "ALTER DATABASE postgres OWNER TO postgres",
]

# As postgres, still a superuser (the init scripts).
INIT_SCRIPTS = [
    "CREATE ROLE anon NOLOGIN NOINHERIT",
    "CREATE ROLE authenticated NOLOGIN NOINHERIT",
    "CREATE ROLE service_role NOLOGIN NOINHERIT BYPASSRLS",
    "CREATE ROLE authenticator LOGIN NOINHERIT",
    f"GRANT {API_ROLES} TO authenticator",
    f"GRANT USAGE ON SCHEMA public TO postgres, {API_ROLES}",
    *(
        f"ALTER DEFAULT PRIVILEGES {owner}IN SCHEMA public GRANT ALL ON {kind} TO postgres, {API_ROLES}"
        for owner in ("", f"FOR ROLE {SUPERUSER} ")
        for kind in ("TABLES", "FUNCTIONS", "SEQUENCES")
    ),
    "ALTER ROLE anon SET statement_timeout = '3s'",
    "ALTER ROLE authenticated SET statement_timeout = '8s'",
    f"CREATE SCHEMA auth AUTHORIZATION {SUPERUSER}",
    """
    CREATE FUNCTION auth.uid() RETURNS uuid LANGUAGE sql STABLE AS $fn$
      SELECT coalesce(
        nullif(current_setting('request.jwt.claim.sub', true), ''),
        (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')
      )::uuid
    $fn$
    """,
    """
    CREATE FUNCTION auth.jwt() RETURNS jsonb LANGUAGE sql STABLE AS $fn$
      SELECT coalesce(
        nullif(current_setting('request.jwt.claim', true), ''),
        nullif(current_setting('request.jwt.claims', true), '')
      )::jsonb
    $fn$
    """,
    f"GRANT USAGE ON SCHEMA auth TO {API_ROLES}",
    "CREATE ROLE supabase_auth_admin NOINHERIT CREATEROLE LOGIN NOREPLICATION",
    "GRANT ALL PRIVILEGES ON SCHEMA auth TO supabase_auth_admin",
]

# As supabase_admin (the migrations).
MIGRATIONS = [
    "ALTER FUNCTION auth.uid() OWNER TO supabase_auth_admin",
    "ALTER FUNCTION auth.jwt() OWNER TO supabase_auth_admin",
    "GRANT USAGE ON SCHEMA auth TO postgres",
    "GRANT ALL ON ALL ROUTINES IN SCHEMA auth TO postgres",
    "GRANT ALL ON DATABASE postgres TO postgres",
    "ALTER ROLE postgres NOSUPERUSER CREATEDB CREATEROLE LOGIN REPLICATION BYPASSRLS",
    f"GRANT {API_ROLES} TO postgres",
    "ALTER ROLE anon INHERIT",
    "ALTER ROLE authenticated INHERIT",
    "ALTER ROLE service_role INHERIT",
]


async def _run(dsn: str, statements: list[str]) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


async def shape_like_supabase(admin_dsn: str, postgres_dsn: str) -> None:
    """Set up a fresh cluster whose bootstrap superuser is `supabase_admin` as Supabase does."""
    await _run(admin_dsn, BOOTSTRAP)
    await _run(postgres_dsn, INIT_SCRIPTS)
    await _run(admin_dsn, MIGRATIONS)
