"""The local app processes: wait for what they need, then exec the real command.

`python -m app.local.bootstrap` waits for the servers, migrates, seeds the demo tenants and
becomes `python -m app api`; with `--worker` it waits for the API and becomes
`python -m app worker`, and with `--scaler` (`make dev SCALE=on-demand`) `python -m app scaler`.
Exec, so that the supervisor's signals reach the app itself.
"""

from __future__ import annotations

import asyncio
import os
import sys
import urllib.request
from collections.abc import Iterable

from sqlalchemy import text

from app.core.db import create_engine
from app.local.config import TENANTS, LocalConfig
from app.local.servers import LOOPBACK, ServerError, postgres_ready, redis_ready, wait_until
from app.migrate import apply_tenant_limits, upgrade
from app.settings import PoolMode, Settings

WAIT_SECONDS = 60.0
# The processes that start once the API is ready: flag, `python -m app` command.
AFTER_API = {"--worker": "worker", "--scaler": "scaler"}


async def seed_tenants(dsn: str, tenants: Iterable[str] = tuple(TENANTS)) -> None:
    """The local tenants (TENANTS, by key): each organization and its owner, once."""
    engine = create_engine(dsn, pool_mode=PoolMode.NULL)
    try:
        async with engine.begin() as conn:
            for name, org_id, user_id in (TENANTS[key] for key in tenants):
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


def _api_ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/ready", timeout=2) as response:  # noqa: S310
            return bool(response.status == 200)
    except OSError:
        return False


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    after_api = next((command for flag, command in AFTER_API.items() if flag in args), None)
    config = LocalConfig.from_env()
    if after_api is not None:
        # The API process migrates; the worker (or the scaler, which reads the queue's demand
        # through migration 0008's function) starts once the API says the schema is there.
        try:
            wait_until(lambda: _api_ready(config.api_url), "the API", WAIT_SECONDS * 2)
        except ServerError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        os.execv(sys.executable, [sys.executable, "-m", "app", after_api])  # noqa: S606
    try:
        wait_until(lambda: postgres_ready(LOOPBACK, config.pg_port), "postgres", WAIT_SECONDS)
        wait_until(lambda: redis_ready(LOOPBACK, config.redis_port), "redis", WAIT_SECONDS)
    except ServerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    dsn = config.database_url
    upgrade(dsn)
    apply_tenant_limits(dsn, Settings())
    asyncio.run(seed_tenants(dsn))
    print("migrations applied, demo tenants seeded", flush=True)
    os.execv(sys.executable, [sys.executable, "-m", "app", "api"])  # noqa: S606


if __name__ == "__main__":
    sys.exit(main())
