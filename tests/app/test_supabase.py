"""The migrations on a database set up as Supabase sets one up (tests/supabase.py): run by
`postgres`, which is no superuser there, and run again without changing anything.

The API, the worker and tenant isolation run on the same database: through the pooler in
tests/app/test_pooler.py, and directly in test_rls.py, test_tenant_writes.py and
test_privileges.py.
"""

from __future__ import annotations

import asyncio
import logging

import pytest

from app.migrate import upgrade
from tests.conftest import Supabase, fetch

pytestmark = pytest.mark.integration

# What a migration could change: objects, their privileges and security, and default privileges.
CATALOG = """
SELECT format('%s %s.%s %s rls=%s', c.relkind, n.nspname, c.relname, c.relacl, c.relrowsecurity)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname NOT LIKE 'pg\\_%' AND n.nspname <> 'information_schema'
UNION ALL
SELECT format('column %s.%s %s', attrelid::regclass, attname, attacl)
FROM pg_attribute WHERE attacl IS NOT NULL
UNION ALL
SELECT format('function %s %s %s', p.oid::regprocedure, md5(p.prosrc), p.proacl)
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname NOT LIKE 'pg\\_%' AND n.nspname <> 'information_schema'
UNION ALL
SELECT format('policy %s %s %s', polrelid::regclass, polname, pg_get_expr(polqual, polrelid)) FROM pg_policy
UNION ALL
SELECT format('trigger %s %s', tgrelid::regclass, tgname) FROM pg_trigger WHERE NOT tgisinternal
UNION ALL
SELECT format('schema %s %s %s', nspname, nspowner::regrole, nspacl) FROM pg_namespace
UNION ALL
SELECT format('default %s %s %s', defaclrole::regrole, defaclnamespace, defaclacl) FROM pg_default_acl
UNION ALL
SELECT format('version %s', version_num) FROM alembic_version
"""


async def catalog(dsn: str) -> list[str]:
    return sorted(row[0] for row in await fetch(dsn, CATALOG))


async def test_the_migrating_role_is_no_superuser_and_owns_what_it_created(supabase: Supabase):
    (role,) = await fetch(
        supabase.dsn,
        "SELECT rolname, rolsuper, rolbypassrls, rolcreaterole FROM pg_roles WHERE rolname = current_user",
    )
    assert (role["rolname"], role["rolsuper"], role["rolbypassrls"], role["rolcreaterole"]) == (
        "postgres",
        False,
        True,
        True,
    )
    owners = await fetch(
        supabase.dsn,
        "SELECT DISTINCT pg_get_userbyid(c.relowner) AS owner FROM pg_class c"
        " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname IN ('public', 'liftoff')",
    )
    assert [row["owner"] for row in owners] == ["postgres"]
    # Supabase's own auth functions were kept, not replaced by migration 0001's.
    (auth,) = await fetch(
        supabase.dsn,
        "SELECT pg_get_userbyid(proowner) AS owner FROM pg_proc WHERE oid = 'auth.uid()'::regprocedure",
    )
    assert auth["owner"] == "supabase_auth_admin"


async def test_a_second_run_changes_nothing(supabase: Supabase, caplog: pytest.LogCaptureFixture):
    before = await catalog(supabase.dsn)
    with caplog.at_level(logging.INFO, logger="alembic"):
        await asyncio.to_thread(upgrade, supabase.dsn)
    messages = [record.getMessage() for record in caplog.records if record.name.startswith("alembic")]
    assert any("transactional DDL" in message for message in messages), messages
    assert not [message for message in messages if message.startswith("Running upgrade")]
    assert await catalog(supabase.dsn) == before
