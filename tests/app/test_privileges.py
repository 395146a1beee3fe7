"""`anon` and `authenticated` hold exactly the privileges docs/api.md lists, no more, no fewer.

On Supabase those roles are what any holder of the project's anon key, or any signed-in user,
reaches through the REST API, and the project's default privileges hand them every new object
in `public`. Privileges are read as effective (granted to the role or to PUBLIC), on every
schema, table, view, column, sequence and function of the app.
"""

from __future__ import annotations

import re
from pathlib import Path

import asyncpg
import pytest

pytestmark = pytest.mark.integration

DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"
ROLES = ("anon", "authenticated")
# The app's own schemas; `auth` is Supabase's (created by migration 0001 where it is missing),
# so only the roles' USAGE of it is the app's concern.
APP_SCHEMAS = ("public", "liftoff")
SCHEMAS = (*APP_SCHEMAS, "auth")

Grant = tuple[str, str, str, str]  # role, kind of object, object, privilege

TABLE_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")
COLUMN_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "REFERENCES")
SEQUENCE_PRIVILEGES = ("SELECT", "UPDATE", "USAGE")

# Extensions' objects (none today) are the extension's, not the app's.
GRANTS = """
WITH roles(role) AS (SELECT unnest($1::text[])),
     relations AS (
       SELECT c.oid, n.nspname || '.' || c.relname AS name, c.relkind
       FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
       WHERE n.nspname = ANY($2::text[]) AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
         AND NOT EXISTS (SELECT FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                         AND d.objid = c.oid AND d.deptype = 'e')
     )
SELECT role, 'schema' AS kind, n.nspname AS object, privilege
FROM roles, pg_namespace n, unnest(ARRAY['USAGE', 'CREATE']) AS privilege
WHERE n.nspname = ANY($3::text[]) AND has_schema_privilege(role, n.oid, privilege)
UNION ALL
SELECT role, 'table', r.name, privilege
FROM roles, relations r, unnest($4::text[]) AS privilege
WHERE r.relkind <> 'S' AND has_table_privilege(role, r.oid, privilege)
UNION ALL
SELECT role, 'column', r.name || '.' || a.attname, privilege
FROM roles, relations r
JOIN pg_attribute a ON a.attrelid = r.oid AND a.attnum > 0 AND NOT a.attisdropped,
unnest($5::text[]) AS privilege
WHERE r.relkind <> 'S' AND has_column_privilege(role, r.oid, a.attnum, privilege)
  AND NOT has_table_privilege(role, r.oid, privilege)
UNION ALL
SELECT role, 'sequence', r.name, privilege
FROM roles, relations r, unnest($6::text[]) AS privilege
WHERE r.relkind = 'S' AND has_sequence_privilege(role, r.oid, privilege)
UNION ALL
SELECT role, 'function', n.nspname || '.' || p.proname || '(' || oidvectortypes(p.proargtypes) || ')',
       'EXECUTE'
FROM roles, pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname = ANY($2::text[]) AND has_function_privilege(role, p.oid, 'EXECUTE')
  AND NOT EXISTS (SELECT FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass
                  AND d.objid = p.oid AND d.deptype = 'e')
"""


async def granted(conn: asyncpg.Connection) -> set[Grant]:
    """Every privilege the roles hold on the app's objects, effective, as the database says."""
    table_privileges = list(TABLE_PRIVILEGES)
    if await conn.fetchval("SELECT current_setting('server_version_num')::int >= 170000"):
        table_privileges.append("MAINTAIN")
    rows = await conn.fetch(
        GRANTS,
        list(ROLES),
        list(APP_SCHEMAS),
        list(SCHEMAS),
        table_privileges,
        list(COLUMN_PRIVILEGES),
        list(SEQUENCE_PRIVILEGES),
    )
    return {(row["role"], row["kind"], row["object"], row["privilege"]) for row in rows}


def documented(page: str) -> set[Grant]:
    """The table between `<!-- privileges -->` markers in docs/api.md, one grant per privilege."""
    table = page.split("<!-- privileges -->", 1)[1].split("<!-- /privileges -->", 1)[0]
    grants: set[Grant] = set()
    for line in table.strip().splitlines()[2:]:
        role_cell, object_cell, privileges_cell = (cell.strip() for cell in line.strip("|").split("|"))
        role = role_cell.strip("`")
        kind, rest = object_cell.split(" ", 1)
        names = re.findall(r"`([^`]+)`", rest)
        if kind == "columns":
            table_name, *columns = names
            objects = [("column", f"{table_name}.{column}") for column in columns]
        else:
            objects = [(kind, names[0])]
        for privilege in privileges_cell.split(","):
            grants |= {(role, k, name, privilege.strip()) for k, name in objects}
    return grants


def test_the_documented_table_is_read():
    grants = documented(DOC.read_text())
    assert ("anon", "schema", "public", "USAGE") in grants
    assert ("authenticated", "column", "public.generations.prompt", "INSERT") in grants
    assert {role for role, *_ in grants} == set(ROLES)


async def test_api_roles_hold_exactly_what_the_docs_list(database: str):
    expected = documented(DOC.read_text())
    conn = await asyncpg.connect(database)
    try:
        actual = await granted(conn)
    finally:
        await conn.close()
    assert actual - expected == set(), "granted, not documented"
    assert expected - actual == set(), "documented, not granted"


async def test_a_new_object_would_be_caught(supabase):
    """Supabase's default privileges hand a new table and sequence to both roles: the listing
    sees them, so a migration that forgets to revoke fails the test above."""
    conn = await asyncpg.connect(supabase.dsn)
    try:
        async with conn.transaction():
            await conn.execute("CREATE TABLE public.forgotten (id bigint GENERATED ALWAYS AS IDENTITY)")
            leaked = {
                (role, kind, name)
                for role, kind, name, _ in await granted(conn)
                if name.startswith("public.forgotten")
            }
            raise _Rollback
    except _Rollback:
        pass
    finally:
        await conn.close()
    assert leaked == {
        (role, kind, name)
        for role in ROLES
        for kind, name in (("table", "public.forgotten"), ("sequence", "public.forgotten_id_seq"))
    }


class _Rollback(Exception):
    """Leaves a transaction without committing what it created."""
