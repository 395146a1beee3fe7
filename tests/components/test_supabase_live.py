"""The Supabase provider against the real Management API: needs a token and a sandbox organization.

Creates a throwaway project (billed to the organization), waits for it, connects through the
pooler the API reported, and deletes it. Skipped unless SUPABASE_ACCESS_TOKEN and
LIFTOFF_SUPABASE_SANDBOX_ORG (an organization slug) are set.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from urllib.parse import quote

import asyncpg
import pytest
from pulumi.dynamic import Config, ConfigureRequest

from components.supabase_api import SupabaseProjectProvider

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not (os.environ.get("SUPABASE_ACCESS_TOKEN") and os.environ.get("LIFTOFF_SUPABASE_SANDBOX_ORG")),
        reason="needs SUPABASE_ACCESS_TOKEN and LIFTOFF_SUPABASE_SANDBOX_ORG (a real Supabase organization)",
    ),
]


def test_a_real_project_is_created_healthy_reachable_through_its_pooler_and_deleted():
    provider = SupabaseProjectProvider()
    provider.configure(ConfigureRequest(Config({}, "liftoff")))  # the token from SUPABASE_ACCESS_TOKEN
    password = secrets.token_urlsafe(24)
    props = {
        "name": f"liftoff-test-{secrets.token_hex(3)}",
        "region": "eu-west-1",
        "organization_slug": os.environ["LIFTOFF_SUPABASE_SANDBOX_ORG"],
        "db_pass": password,
        "deletion_protection": False,
    }
    created = provider.create(provider.check({}, props).inputs)
    try:
        outs = created.outs or {}
        assert outs["status"] == "ACTIVE_HEALTHY"
        dsn = (
            f"postgresql://{outs['pooler_user']}:{quote(password, safe='')}@{outs['pooler_host']}"
            f":{outs['pooler_session_port']}/{outs['pooler_database']}"
        )

        async def select_one() -> int:
            conn = await asyncpg.connect(dsn, ssl="require")
            try:
                return int(await conn.fetchval("select 1"))
            finally:
                await conn.close()

        assert asyncio.run(select_one()) == 1
        assert provider.read(created.id, outs).id == created.id
    finally:
        provider.delete(created.id, created.outs or {"deletion_protection": False})
