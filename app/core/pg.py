"""The API's Postgres: an asyncpg pool, pooler-safe, bounded in time, and tenant transactions.

The API reaches Postgres through asyncpg directly, without SQLAlchemy: importing SQLAlchemy's
asyncio extension alone is a quarter of a second of cold start, and its statement machinery
costs more than the API's statements themselves. (The worker and the migrations keep it.)
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from app.settings import PoolMode, Settings

# A pooled connection idle for longer is checked with an empty statement before use.
IDLE_CHECK_SECONDS = 0.05
# Schemes of SQLAlchemy URLs that name a driver; asyncpg reads the libpq form only.
_SCHEMES = {"postgres", "postgresql", "postgresql+asyncpg", "postgresql+psycopg", "postgresql+psycopg2"}


def libpq_dsn(dsn: str) -> str:
    """The DSN as asyncpg reads it, whatever Postgres scheme it was given with."""
    parts = urlsplit(dsn)
    if parts.scheme not in _SCHEMES:
        raise ValueError(f"not a Postgres DSN: scheme {parts.scheme!r}")
    return urlunsplit(parts._replace(scheme="postgresql"))


class PooledConnection(asyncpg.Connection):  # type: ignore[misc]
    """A connection that knows when it was last given back to the pool."""

    released_at = float("inf")


async def _reset(conn: PooledConnection) -> None:
    # Everything the API sets is transaction-local (SET LOCAL, set_config(..., true)), so a
    # released connection needs no RESET ALL round trip; one given back mid-transaction
    # (a cancelled request) is rolled back.
    if conn.is_in_transaction():
        await conn.execute("ROLLBACK")
    conn.released_at = time.monotonic()


class Database:
    """A small pool of connections to DATABASE_URL (or none: a new connection per use)."""

    def __init__(self, settings: Settings, application_name: str = "liftoff-api") -> None:
        self.pooler = settings.transaction_pooler()
        timeout = settings.db_request_timeout_seconds
        self._connect: dict[str, Any] = {
            "dsn": libpq_dsn(settings.secret("database_url")),
            "timeout": min(settings.db_connect_timeout_seconds, timeout),
            # Every statement and the rollback of a connection given back included: a frozen
            # server costs a bounded wait, never a hung request.
            "command_timeout": timeout,
            "server_settings": {"application_name": application_name},
            # A transaction-mode pooler hands each transaction another server connection: no
            # statement may be cached by name across them. Every use below is in a transaction
            # behind the pooler, so a statement's prepare and execute reach the same backend.
            "statement_cache_size": 0 if self.pooler else 100,
        }
        self._null = settings.pool_mode() is PoolMode.NULL
        self._max_size = settings.db_pool_size + settings.db_max_overflow
        self._acquire_timeout = timeout
        self._pool: asyncpg.Pool | None = None

    async def open(self) -> None:
        """Create the pool; its connections open on first use, so a database that is down
        does not keep the API from starting (it reports 503 until the database is back)."""
        if not self._null:
            self._pool = await asyncpg.create_pool(
                min_size=0,
                max_size=self._max_size,
                # A transaction-mode pooler pins a server connection only for a transaction, so
                # idle client connections cost it nothing; closed after a while all the same.
                max_inactive_connection_lifetime=300,
                reset=_reset,
                connection_class=PooledConnection,
                **self._connect,
            )

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A connection for one use: from the pool, or new (DB_POOL_MODE=null)."""
        if self._pool is None:
            single = await asyncpg.connect(**self._connect)
            try:
                yield single
            finally:
                await single.close(timeout=self._acquire_timeout)
            return
        conn: PooledConnection = await self._pool.acquire(timeout=self._acquire_timeout)
        try:
            if time.monotonic() - conn.released_at > IDLE_CHECK_SECONDS:
                conn = await self._checked(conn)
            yield conn
        finally:
            await self._pool.release(conn)

    async def _checked(self, conn: PooledConnection) -> PooledConnection:
        """`conn` if it still answers, else a new connection in its place. A connection that
        sat idle may have been closed by a restart of the server or the pooler; under load,
        connections are never idle long enough to pay for this round trip."""
        pool = self._pool
        if pool is None:
            return conn
        try:
            await conn.execute("SELECT 1")
            return conn
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
            # Given back, a closed connection is dropped, and the pool opens a new one.
            await pool.release(conn)
            fresh: PooledConnection = await pool.acquire(timeout=self._acquire_timeout)
            return fresh

    @asynccontextmanager
    async def tenant(
        self, claims: dict[str, Any], *, tenant_claim: str, statement_timeout_ms: int
    ) -> AsyncIterator[asyncpg.Connection]:
        """A transaction that runs as Supabase's `authenticated` role with the caller's claims.

        Row Level Security then confines every statement to the caller's organization, even
        one that forgets its WHERE clause. Everything is transaction-local (`set_config(...,
        true)` is SET LOCAL), so nothing leaks to the next user of a pooled connection.
        """
        async with self.connection() as conn, conn.transaction():
            await conn.execute(
                "SELECT set_config('request.jwt.claims', $1, true),"
                " set_config('liftoff.tenant_claim', $2, true),"
                " set_config('statement_timeout', $3, true),"
                " set_config('role', 'authenticated', true)",
                json.dumps(claims, separators=(",", ":")),
                tenant_claim,
                str(statement_timeout_ms),
            )
            yield conn
