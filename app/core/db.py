"""SQLAlchemy engines that work through Supabase's transaction-mode pooler (worker, cleanup, migrations).

Behind a pooler in transaction mode (Supavisor's port 6543, Supabase's dedicated PgBouncer,
PgBouncer's `pool_mode = transaction`), each transaction, and each statement outside one, may
run on another server connection. So nothing may outlive its transaction on the server:

- No named prepared statement. SQLAlchemy's asyncpg dialect prepares every statement with
  `Connection.prepare()`, which asyncpg's FAQ says to avoid behind such a pooler
  (https://magicstack.github.io/asyncpg/current/faq.html#why-am-i-getting-prepared-statement-errors).
  SQLAlchemy's remedy, a unique name per statement
  (https://docs.sqlalchemy.org/en/20/dialects/postgresql.html#prepared-statement-name-with-pgbouncer),
  avoids clashes of names, but each statement then stays prepared on the server connection
  that parsed it unless the pooler runs DISCARD after every transaction (its own warning),
  which a hosted pooler cannot be told to do; and outside a transaction it is executed where
  it may not exist. PgBouncer's `max_prepared_statements` would track them, but only from
  1.21 (https://www.pgbouncer.org/config.html#max_prepared_statements; Debian 12 ships 1.18),
  and Supabase documents that Supavisor's transaction mode supports no prepared statements
  (https://supabase.com/docs/guides/troubleshooting/disabling-prepared-statements-qL8lEL).
  So every statement is the unnamed one: asyncpg sends its Parse again in the round trip
  that binds and executes it (it does so for unnamed statements whenever its statement cache
  is off), and the next statement replaces it. Nothing is left behind by name, and no round
  trip relies on an earlier one having reached the same server connection.
- No statement cache, in asyncpg or in SQLAlchemy. (asyncpg's cache of type codecs is the
  client's own, and holds on every server connection of the database.)
- Every statement in a transaction, the worker's included (see Worker.db): asyncpg describes
  a statement in a round trip of its own and, the first time a connection meets an array or
  another type it has no codec for, looks the type up between two session-level
  `set_config('jit', ...)` calls, the second restoring what the first changed. Outside a
  transaction those round trips may reach three server connections, and leave one of them
  with JIT off; in a transaction they reach one.

The app's tests run the worker, the API, the migrations and the cleanup job through Debian's
PgBouncer in transaction mode and read every server connection afterwards
(tests/app/test_pooler.py).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from app.settings import PoolMode, Settings

_DRIVERLESS = {"postgres", "postgresql", "postgresql+psycopg", "postgresql+psycopg2"}


def async_url(dsn: str) -> URL:
    """The DSN with the asyncpg driver, whatever Postgres scheme it was given with."""
    url = make_url(dsn)
    if url.drivername in _DRIVERLESS:
        url = url.set(drivername="postgresql+asyncpg")
    if url.drivername != "postgresql+asyncpg":
        raise ValueError(f"not a Postgres DSN: scheme {url.drivername!r}")
    # asyncpg takes `ssl`, libpq-style DSNs say `sslmode`.
    query = dict(url.query)
    if "sslmode" in query:
        query["ssl"] = query.pop("sslmode")
    return url.set(query=query)


def unnamed_statement() -> str:
    """The name SQLAlchemy's dialect gives asyncpg for each statement it prepares: the empty
    name, PostgreSQL's unnamed statement, which asyncpg parses again when executing it."""
    return ""


def pooler_safe_connect_args(
    connect_timeout: float, application_name: str, command_timeout: float | None = None
) -> dict[str, Any]:
    """asyncpg arguments for a pooler that hands each transaction a different server connection."""
    return {
        # No reuse of prepared statements across transactions...
        "statement_cache_size": 0,
        # ...and none prepared by name: see the module's docstring.
        "prepared_statement_name_func": unnamed_statement,
        **direct_connect_args(connect_timeout, application_name, command_timeout),
    }


def direct_connect_args(
    connect_timeout: float, application_name: str, command_timeout: float | None = None
) -> dict[str, Any]:
    """asyncpg arguments for a direct or session-mode connection."""
    args: dict[str, Any] = {
        "timeout": connect_timeout,
        "server_settings": {"application_name": application_name},
    }
    if command_timeout is not None:
        # Every statement, the rollback of a connection given back to the pool included: a
        # frozen server then costs a bounded wait, never a hung request.
        args["command_timeout"] = command_timeout
    return args


def create_engine(
    dsn: str,
    *,
    pool_mode: PoolMode,
    transaction_pooler: bool = True,
    pool_size: int = 5,
    max_overflow: int = 5,
    connect_timeout: float = 5.0,
    command_timeout: float | None = None,
    pool_timeout: float = 30.0,
    application_name: str = "liftoff",
) -> AsyncEngine:
    """An engine for `dsn`. Behind a transaction-mode pooler (the safe default) it never relies
    on a prepared statement outliving its use; on a session or direct connection it caches them,
    which saves a round trip per statement."""
    url = async_url(dsn)
    if transaction_pooler:
        # SQLAlchemy keeps its own prepared-statement cache on top of asyncpg's; a pooler in
        # transaction mode hands each transaction another server connection, so neither may cache.
        url = url.update_query_dict({"prepared_statement_cache_size": "0"})
        connect_args = pooler_safe_connect_args(connect_timeout, application_name, command_timeout)
    else:
        connect_args = direct_connect_args(connect_timeout, application_name, command_timeout)
    if pool_mode is PoolMode.NULL:
        return create_async_engine(url, poolclass=NullPool, connect_args=connect_args)
    # A transaction-mode pooler pins a server connection only for the length of a transaction,
    # so a small pool of client connections costs it nothing, and saves a TCP, TLS and
    # authentication handshake per request.
    return create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_timeout=pool_timeout,
        pool_pre_ping=True,
        pool_recycle=1800,
        connect_args=connect_args,
    )


def engine_for(
    settings: Settings,
    *,
    application_name: str,
    min_pool_size: int = 0,
) -> AsyncEngine:
    """The engine for DATABASE_URL as the settings configure it: pool mode, pooler safety, sizes."""
    return create_engine(
        settings.secret("database_url"),
        pool_mode=settings.pool_mode(),
        transaction_pooler=settings.transaction_pooler(),
        pool_size=max(settings.db_pool_size, min_pool_size),
        max_overflow=settings.db_max_overflow,
        connect_timeout=settings.db_connect_timeout_seconds,
        application_name=application_name,
    )
