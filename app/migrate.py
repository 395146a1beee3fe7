"""Run Alembic migrations programmatically (what `python -m app migrate` does)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import text

from app.core.db import create_engine
from app.settings import PoolMode, Settings

ALEMBIC_INI = Path(__file__).with_name("alembic.ini")


def alembic_config(dsn: str | None = None) -> Config:
    """Alembic's config for this app; without `dsn`, env.py reads MIGRATIONS_DATABASE_URL."""
    config = Config(str(ALEMBIC_INI))
    if dsn is not None:
        config.attributes["dsn"] = dsn
    return config


def upgrade(dsn: str | None = None, revision: str = "head") -> None:
    """Migrate the database up to `revision`."""
    command.upgrade(alembic_config(dsn), revision)


def downgrade(dsn: str | None = None, revision: str = "base") -> None:
    """Migrate the database down to `revision`."""
    command.downgrade(alembic_config(dsn), revision)


def apply_tenant_limits(dsn: str, settings: Settings) -> None:
    """Write the TENANT_* settings into the defaults row of liftoff.tenant_limits, which the
    database enforces on every tenant's submissions (migration 0004). Rows of single
    organizations, set by an operator, keep precedence."""

    async def write() -> None:
        engine = create_engine(dsn, pool_mode=PoolMode.NULL, application_name="liftoff-migrate")
        try:
            async with engine.begin() as conn:
                await conn.execute(
                    text(
                        "INSERT INTO liftoff.tenant_limits"
                        " (organization_id, max_active_jobs, max_submissions_per_minute)"
                        " VALUES (liftoff.default_limits_id(), :active, :per_minute)"
                        " ON CONFLICT (organization_id) DO UPDATE SET"
                        " max_active_jobs = EXCLUDED.max_active_jobs,"
                        " max_submissions_per_minute = EXCLUDED.max_submissions_per_minute,"
                        " updated_at = now()"
                    ),
                    {
                        "active": settings.tenant_max_active_jobs,
                        "per_minute": settings.tenant_max_submissions_per_minute,
                    },
                )
        finally:
            await engine.dispose()

    asyncio.run(write())
