"""The API, the worker, the migrations and the cleanup job through a real transaction-mode pooler.

PgBouncer (Debian's package) in `pool_mode = transaction` with three server connections stands
in front of the Supabase-shaped database, as Supavisor's port 6543 and Supabase's dedicated
PgBouncer stand in front of a project: each transaction, and each statement outside one, may
run on another server connection. Nothing may rely on server-side state outliving its
transaction, and nothing may be left behind on a server connection.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import pytest

from app.local.servers import LocalPgBouncer, free_port, wait_until
from app.migrate import downgrade, upgrade
from app.worker.retention import delete_old_logs
from tests.conftest import JWT_SECRET, Servers, Supabase, bearer, fetch, make_token, truncate

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("empty_tables")]

TENANTS = 4
JOBS_PER_TENANT = 30
# Requests a tenant has in flight at once.
IN_FLIGHT = 6
WORKERS = 2
USER = "postgres"
DONE = ("succeeded", "cancelled")


@pytest.fixture
async def empty_tables(supabase: Supabase) -> AsyncIterator[None]:
    await truncate(supabase.dsn)
    yield
    await truncate(supabase.dsn)


@dataclass
class Process:
    """`python -m app <command>` with its JSON log in a file."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise

    def lines(self) -> list[dict[str, object]]:
        return [json.loads(line) for line in self.log.read_text().splitlines() if line.startswith("{")]


def spawn(command: str, env: dict[str, str], log: Path) -> Process:
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "app", command], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    return Process(command, process, log)


def app_env(pooler: LocalPgBouncer, servers: Servers, **extra: str) -> dict[str, str]:
    inherited = {
        k: v for k, v in os.environ.items() if not k.startswith(("WORKER_", "LOCAL_PROVIDER_", "AI_", "DB_"))
    }
    return {
        **inherited,
        "APP_ENV": "test",
        "DATABASE_URL": pooler.dsn(USER),
        # Not port 6543: say so, as a deployment behind any other pooler must.
        "DB_TRANSACTION_POOLER": "true",
        # A database of its own on the session's Redis: wake-ups of other tests are not ours.
        "REDIS_URL": servers.redis.url(db=1),
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "INFO",
        "PORT": str(free_port()),
        **extra,
    }


@contextmanager
def log_slice(path: Path) -> Iterator[list[str]]:
    """The lines a log file gains inside the block."""
    start = path.stat().st_size
    gained: list[str] = []
    yield gained
    with path.open("rb") as log:
        log.seek(start)
        gained += log.read().decode(errors="replace").splitlines()


# What a session may hold after its transaction ended, which a transaction pooler's next
# client would inherit. Settings PgBouncer itself sets for each client it serves are not.
SESSION_STATE = """
SELECT pg_backend_pid() AS pid,
       array(SELECT name FROM pg_prepared_statements) AS prepared_statements,
       array(SELECT name || '=' || setting FROM pg_settings
             WHERE source = 'session' AND setting IS DISTINCT FROM reset_val
               AND lower(name) NOT IN ('application_name', 'client_encoding', 'datestyle', 'timezone',
                                       'standard_conforming_strings')) AS settings,
       array(SELECT objid::text FROM pg_locks
             WHERE locktype = 'advisory' AND pid = pg_backend_pid()) AS advisory_locks,
       array(SELECT name FROM pg_cursors WHERE name <> '') AS cursors,
       array(SELECT pg_listening_channels()) AS channels,
       array(SELECT relname::text FROM pg_class WHERE relnamespace = pg_my_temp_schema()) AS temp_tables
"""


async def session_state_left(
    pooler: LocalPgBouncer, database: str = "postgres"
) -> dict[int, dict[str, list[str]]]:
    """What each of the pooler's server connections to `database` holds beyond a transaction:
    prepared statements, session settings, advisory locks, cursors, LISTENs, temporary tables.

    The catalog views show only the session they run in, so they are read on each server
    connection: one open transaction per connection SHOW SERVERS lists pins each client to a
    server connection of its own until it ends (the pool cannot hand out a busy one). The pids
    read must then be exactly the ones listed, which proves every connection was read.
    """
    listed = {int(row["remote_pid"]) for row in pooler.show("SERVERS") if row["database"] == database}
    assert listed, "the pooler holds no server connection to read"
    clients = [await asyncpg.connect(pooler.dsn(USER, database), statement_cache_size=0) for _ in listed]
    found: dict[int, dict[str, list[str]]] = {}
    try:
        transactions = [client.transaction() for client in clients]
        for transaction in transactions:
            await transaction.start()
        for client in clients:
            row = await client.fetchrow(SESSION_STATE)
            found[row["pid"]] = {key: list(value) for key, value in row.items() if key != "pid" and value}
        for transaction in transactions:
            await transaction.rollback()
    finally:
        for client in clients:
            await client.close()
    assert set(found) == listed, f"read {sorted(found)}, the pooler lists {sorted(listed)}"
    return found


def nothing_left(state: dict[int, dict[str, list[str]]]) -> bool:
    return all(not held for held in state.values())


def server_errors(lines: list[str]) -> list[str]:
    return [line for line in lines if "ERROR:" in line or "prepared statement" in line]


@dataclass
class Tenant:
    """An organization with a token of one of its members, and the jobs it submitted."""

    org: uuid.UUID
    headers: dict[str, str]
    submitted: set[str]


async def run_tenant(http: httpx.AsyncClient, tenant: Tenant, statuses: list[int]) -> None:
    """Submit, list and read, a few requests at a time, as a busy client does."""

    async def call(method: str, path: str, **kwargs: object) -> httpx.Response:
        response = await http.request(method, path, headers=tenant.headers, **kwargs)  # type: ignore[arg-type]
        statuses.append(response.status_code)
        return response

    for start in range(0, JOBS_PER_TENANT, IN_FLIGHT):
        batch = range(start, min(start + IN_FLIGHT, JOBS_PER_TENANT))
        submitted = await asyncio.gather(
            *(call("POST", "/v1/generations", json={"prompt": f"{tenant.org} {i}"}) for i in batch),
            call("GET", "/v1/generations", params={"limit": "100"}),
        )
        for response in submitted[:-1]:
            assert response.status_code == 202, response.text
            tenant.submitted.add(response.json()["id"])
        read = await call("GET", f"/v1/generations/{submitted[0].json()['id']}")
        assert read.status_code == 200, read.text
    last = sorted(tenant.submitted)[-1]
    assert (await call("POST", f"/v1/generations/{last}/cancel")).status_code in (200, 202, 409)


async def wait_done(dsn: str, count: int, timeout: float = 60.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        rows = await fetch(dsn, "SELECT ai_status, count(*) AS n FROM generations GROUP BY ai_status")
        by_status = {row["ai_status"]: row["n"] for row in rows}
        if sum(by_status.get(status, 0) for status in DONE) == count:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"jobs not done after {timeout}s: {by_status}")
        await asyncio.sleep(0.2)


async def test_api_and_workers_under_load_from_several_tenants(
    pooler: LocalPgBouncer, supabase: Supabase, servers: Servers, tmp_path: Path
):
    api_env = app_env(pooler, servers, SUPABASE_JWT_SECRET=JWT_SECRET)
    base = f"http://127.0.0.1:{api_env['PORT']}"
    worker_env = app_env(
        pooler,
        servers,
        WORKER_CONCURRENCY="4",
        LOCAL_PROVIDER_LATENCY_MS="200",
        # Sweeps, queue gauges and heartbeats all run several times in the test.
        WORKER_SWEEP_SECONDS="0.5",
        WORKER_LEASE_SECONDS="10",
        WORKER_WAIT_SECONDS="1",
    )
    tenants = [Tenant(uuid.uuid4(), {}, set()) for _ in range(TENANTS)]
    for tenant in tenants:
        tenant.headers = bearer(make_token(org=tenant.org, user=uuid.uuid4()))
    statuses: list[int] = []
    processes: list[Process] = []
    with log_slice(supabase.log) as server_log, log_slice(pooler.log_path) as pooler_log:
        try:
            api = spawn("api", api_env, tmp_path / "api.log")
            processes.append(api)
            wait_until(lambda: _ready(base), "the API", 30, api.process)
            processes += [
                spawn("worker", {**worker_env, "PORT": str(free_port())}, tmp_path / f"worker-{i}.log")
                for i in range(WORKERS)
            ]
            async with httpx.AsyncClient(base_url=base, timeout=30) as http:
                await asyncio.gather(*(run_tenant(http, tenant, statuses) for tenant in tenants))
                await wait_done(supabase.dsn, TENANTS * JOBS_PER_TENANT)
                for tenant in tenants:
                    await _sees_only_its_own(http, tenant, tenants)
        finally:
            codes = {f"{p.name}-{i}": p.stop() for i, p in enumerate(processes)}
    # uvicorn re-raises the SIGTERM it handled once it has shut down.
    assert all(code in (0, -signal.SIGTERM) for code in codes.values()), codes
    assert statuses and max(statuses) < 500, sorted(set(statuses))
    for process in processes:
        assert "prepared statement" not in process.log.read_text(), process.name
        bad = [line for line in process.lines() if line.get("severity") not in ("DEBUG", "INFO")]
        assert not bad, f"{process.name}: {bad[:5]}"
    assert not server_errors(server_log), server_errors(server_log)[:5]
    assert not [line for line in pooler_log if "prepared statement" in line]
    # Server connections were shared: a client's transactions ran on more than one of them.
    left = await session_state_left(pooler)
    assert 2 <= len(left) <= pooler.pool_size, left
    assert nothing_left(left), left


def _ready(base: str) -> bool:
    try:
        return httpx.get(f"{base}/ready", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


async def _sees_only_its_own(http: httpx.AsyncClient, tenant: Tenant, tenants: list[Tenant]) -> None:
    listed = await http.get("/v1/generations", headers=tenant.headers, params={"limit": "100"})
    assert listed.status_code == 200
    assert {item["id"] for item in listed.json()["items"]} == tenant.submitted
    statuses = {item["status"] for item in listed.json()["items"]}
    assert statuses <= set(DONE), statuses
    other = next(t for t in tenants if t is not tenant)
    foreign = next(iter(other.submitted))
    assert (await http.get(f"/v1/generations/{foreign}", headers=tenant.headers)).status_code == 404


async def test_migrations_run_through_the_pooler(pooler: LocalPgBouncer, supabase: Supabase):
    """Up, a second no-op run, down and up again: every DDL statement through the pooler."""
    await fetch(supabase.dsn, "DROP DATABASE IF EXISTS pooled_migrations")
    await fetch(supabase.dsn, "CREATE DATABASE pooled_migrations")
    dsn = pooler.dsn(USER, "pooled_migrations")
    with log_slice(supabase.log) as server_log:
        for step in (upgrade, upgrade, lambda url: downgrade(url, "base"), upgrade):
            await asyncio.to_thread(step, dsn)
    assert not server_errors(server_log), server_errors(server_log)[:5]
    version = await fetch(supabase.postgres.dsn("pooled_migrations", USER), "SELECT * FROM alembic_version")
    assert len(version) == 1
    left = await session_state_left(pooler, "pooled_migrations")
    assert nothing_left(left), left


async def test_cleanup_runs_through_the_pooler(pooler: LocalPgBouncer, supabase: Supabase):
    org = uuid.uuid4()
    await fetch(
        supabase.dsn,
        """
        WITH o AS (INSERT INTO organizations (id) VALUES ($1) RETURNING id),
             g AS (INSERT INTO generations (organization_id, created_by, prompt, model)
                   SELECT id, gen_random_uuid(), 'p', 'm' FROM o RETURNING id, organization_id)
        INSERT INTO generation_logs
          (generation_id, organization_id, attempt, status, provider, started_at, created_at)
        SELECT g.id, g.organization_id, n, 'retry', 'local', now(), now() - interval '40 days'
        FROM g, generate_series(1, 50) AS n
        """,
        org,
    )
    with log_slice(supabase.log) as server_log:
        # Small batches: many transactions, each free to land on another server connection.
        deleted = await delete_old_logs(pooler.dsn(USER), days=30, batch=7)
    assert deleted == 50
    assert not server_errors(server_log), server_errors(server_log)[:5]
    left = await session_state_left(pooler)
    assert nothing_left(left), left
