"""Alembic environment: migrates over MIGRATIONS_DATABASE_URL, never the app's pooled URL."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

from app.core.db import create_engine
from app.models import metadata
from app.settings import PoolMode, Role, Settings


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=metadata, transaction_per_migration=True)
    with context.begin_transaction():
        context.run_migrations()


async def _online(dsn: str) -> None:
    engine = create_engine(dsn, pool_mode=PoolMode.NULL, application_name="liftoff-migrate")
    try:
        async with engine.connect() as conn:
            await conn.run_sync(_run)
            await conn.commit()
    finally:
        await engine.dispose()


def main() -> None:
    url = context.config.attributes.get("dsn")
    if url is None:
        url = Settings().require(Role.MIGRATE).secret("migrations_database_url")
    if context.is_offline_mode():
        context.configure(url=url, target_metadata=metadata, literal_binds=True)
        with context.begin_transaction():
            context.run_migrations()
    else:
        asyncio.run(_online(url))


main()
