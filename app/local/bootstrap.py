"""The local API process: wait for the servers, migrate, seed the demo tenants, then serve.

Run by `make dev` as `python -m app.local.bootstrap`; it ends by exec-ing `python -m app api`,
so the supervisor's signals reach the API itself.
"""

from __future__ import annotations

import asyncio
import os
import sys

from sqlalchemy import text

from app.core.db import create_engine
from app.local.config import TENANTS, LocalConfig
from app.local.servers import LOOPBACK, ServerError, postgres_ready, redis_ready, wait_until
from app.migrate import upgrade
from app.settings import PoolMode

WAIT_SECONDS = 60.0


async def _seed(dsn: str) -> None:
    engine = create_engine(dsn, pool_mode=PoolMode.NULL)
    try:
        async with engine.begin() as conn:
            for name, org_id, user_id in TENANTS.values():
                await conn.execute(
                    text(
                        "INSERT INTO organizations (id, name) VALUES (:id, :name) ON CONFLICT (id) DO NOTHING"
                    ),
                    {"id": org_id, "name": name},
                )
                await conn.execute(
                    text(
                        "INSERT INTO organization_members (organization_id, user_id, role)"
                        " VALUES (:org, :user, 'owner') ON CONFLICT DO NOTHING"
                    ),
                    {"org": org_id, "user": user_id},
                )
    finally:
        await engine.dispose()


def main() -> int:
    config = LocalConfig.from_env()
    try:
        wait_until(lambda: postgres_ready(LOOPBACK, config.pg_port), "postgres", WAIT_SECONDS)
        wait_until(lambda: redis_ready(LOOPBACK, config.redis_port), "redis", WAIT_SECONDS)
    except ServerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    dsn = config.database_url
    upgrade(dsn)
    asyncio.run(_seed(dsn))
    print("migrations applied, demo tenants seeded", flush=True)
    os.execv(sys.executable, [sys.executable, "-m", "app", "api"])  # noqa: S606


if __name__ == "__main__":
    sys.exit(main())
