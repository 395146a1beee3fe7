"""Alembic environment: migrates over MIGRATIONS_DATABASE_URL, never the app's pooled URL.

One upgrade is one transaction, and it starts by taking a transaction-scoped advisory lock, so
two migration runs (a retried deploy while a cancelled one's execution still runs, say) never
interleave: the second waits for the first to commit, then finds the schema at head and does
nothing. A transaction-scoped lock (`pg_advisory_xact_lock`) is released by the commit or the
rollback itself, so it also holds through a transaction-mode pooler, which may give each
transaction another server connection (a session lock could be left held on one of them).
Postgres's DDL is transactional, so a run that fails, or is cancelled, leaves nothing half done.
https://www.postgresql.org/docs/current/explicit-locking.html#ADVISORY-LOCKS
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager

from alembic import context
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from app.core.db import create_engine
from app.models import metadata
from app.settings import PoolMode, Role, Settings

# The advisory lock's key: any fixed bigint, the same for every run against the database.
LOCK_KEY = 0x6C6966746F6666  # "liftoff"
# How long a run waits for another to finish: under the migrations job's task timeout (600 s),
# so the wait ends with the message below rather than with the task being killed.
LOCK_WAIT_SECONDS = 300.0


class MigrationLockTimeout(RuntimeError):
    """Another migration run held the lock for longer than this one would wait."""


def _lock(connection: Connection, wait_seconds: float) -> None:
    """Take the migrations lock for this transaction, waiting at most `wait_seconds`."""
    # SET LOCAL: the timeout ends with the transaction, so it bounds this wait and nothing after.
    connection.execute(text(f"SET LOCAL lock_timeout = '{int(wait_seconds * 1000)}ms'"))
    try:
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": LOCK_KEY})
    except DBAPIError as error:
        if getattr(error.orig, "sqlstate", None) != "55P03":  # lock_not_available
            raise
        raise MigrationLockTimeout(
            f"another migration run held the migrations lock for {wait_seconds:g}s; it is still"
            " running (see the migrations job's executions) or its connection is stuck: run again"
            " once it has finished"
        ) from error
    connection.execute(text("SET LOCAL lock_timeout TO DEFAULT"))


def _run(connection: Connection) -> None:
    wait = float(context.config.attributes.get("lock_wait_seconds", LOCK_WAIT_SECONDS))
    context.configure(connection=connection, target_metadata=metadata)
    migration = context.get_context()
    autocommit_block = migration.autocommit_block

    @contextmanager
    def relocking_autocommit_block() -> Iterator[None]:
        # A statement Postgres refuses inside a transaction (CREATE INDEX CONCURRENTLY) runs in
        # `op.get_context().autocommit_block()`: Alembic commits the run's transaction before it,
        # which releases the lock, and begins a new one after it, which takes it again here.
        # Such a migration is no longer all or nothing: its statements must be idempotent
        # (IF NOT EXISTS), as a run that fails after the block leaves them done.
        with autocommit_block():
            yield
        _lock(migration.connection or connection, wait)

    migration.autocommit_block = relocking_autocommit_block  # type: ignore[method-assign]
    # Alembic begins the transaction; the lock is its first statement, so the current revision
    # is read only once the lock is held.
    with context.begin_transaction():
        _lock(connection, wait)
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
