"""The local pool: real `python -m app worker` processes against the test Postgres and Redis,
started after the simulated start delay, stopped by a smaller count, none left behind."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import pytest
import redis

from app.core.db import create_engine
from app.scaler.demand import PostgresDemand
from app.scaler.policy import PoolState, ScalePolicy
from app.scaler.pools import LocalPool
from app.scaler.service import Scaler
from app.settings import PoolMode
from tests.app.scaler.conftest import emptied
from tests.app.worker.conftest import FAST, statuses, submit, wait_all
from tests.conftest import Servers

pytestmark = pytest.mark.integration

DELAY = 1.5


def workers() -> list[int]:
    """The pids of this test process's children that are `python -m app worker`, zombies excluded
    (`ps`, on Linux and macOS alike)."""
    listing = subprocess.run(
        ["ps", "-A", "-o", "pid=,ppid=,stat=,command="], capture_output=True, text=True, check=True
    ).stdout
    found = []
    for line in listing.splitlines():
        pid, ppid, stat, command = line.split(None, 3)
        if int(ppid) == os.getpid() and not stat.startswith("Z") and command.endswith("-m app worker"):
            found.append(int(pid))
    return found


async def revisions(dsn: str) -> set[str]:
    conn = await asyncpg.connect(dsn)
    try:
        return {row["revision"] for row in await conn.fetch("SELECT DISTINCT revision FROM generation_logs")}
    finally:
        await conn.close()


async def until(predicate: Callable[[], bool | Awaitable[bool]], timeout: float, what: str) -> float:
    """Seconds until `predicate` held."""
    started = time.monotonic()
    while True:
        result = predicate()
        if isinstance(result, Awaitable):
            result = await result
        if result:
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)


@pytest.fixture
def env(servers: Servers) -> dict[str, str]:
    """A worker's environment, as `make dev` gives the scaler's: the test servers, fast timings."""
    settings: dict[str, Any] = {**FAST, "worker_concurrency": 2}
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(("WORKER_", "LOCAL_PROVIDER_", "AI_"))},
        "APP_ENV": "test",
        "DATABASE_URL": servers.dsn,
        "REDIS_URL": servers.redis.url(),
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "WARNING",
        **{key.upper(): str(value) for key, value in settings.items()},
    }


@pytest.fixture
async def queue(servers: Servers) -> AsyncIterator[str]:
    redis.Redis.from_url(servers.redis.url()).flushall()
    async with emptied(servers.dsn):
        yield servers.dsn


@pytest.fixture
async def pool(env: dict[str, str], queue: str) -> AsyncIterator[LocalPool]:
    local = LocalPool(env, start_delay=DELAY, stop_seconds=10)
    try:
        yield local
    finally:
        await local.aclose()
        # Nothing outlives the pool: no worker process, not even a zombie.
        assert workers() == []


async def test_a_worker_starts_after_the_delay_and_runs_the_queue(
    pool: LocalPool, queue: str, servers: Servers
):
    await submit(queue, servers.redis.url(), 3)
    await pool.resize(1)
    # Starting: counted as an instance (Cloud Run reports the count it was set to), not yet running.
    assert await pool.read() == PoolState(instances=1, split={"local": 100})
    await asyncio.sleep(DELAY / 2)
    assert (pool.running, workers()) == (0, [])
    assert (await statuses(queue)) == {"queued": 3}

    started = await until(lambda: pool.running == 1, DELAY + 10, "the worker process")
    assert started >= DELAY / 2 - 0.1  # the rest of the delay
    (process,) = pool.processes
    assert workers() == [process.pid]
    await wait_all(queue, "succeeded", 3, timeout=30)
    # It ran them as the pool's revision, on the test's Postgres and Redis.
    assert await revisions(queue) == {"local"}

    await pool.resize(0)
    # SIGTERM: the worker drains and exits 0, as on Cloud Run, instead of being killed.
    assert process.returncode == 0
    assert await pool.read() == PoolState(instances=0, split={"local": 100})
    assert workers() == []


async def test_a_count_lowered_during_the_delay_starts_nothing(pool: LocalPool):
    await pool.resize(2)
    await asyncio.sleep(0.1)
    await pool.resize(0)
    await asyncio.sleep(DELAY + 1)
    assert (pool.running, workers(), (await pool.read()).instances) == (0, [], 0)


async def test_a_smaller_count_stops_the_surplus_with_sigterm(env: dict[str, str], queue: str):
    pool = LocalPool(env, start_delay=0, stop_seconds=10)
    try:
        await pool.resize(2)
        await until(lambda: len(workers()) == 2, 20, "two workers")
        kept, stopped = pool.processes
        await pool.resize(1)
        assert stopped.returncode is not None
        assert pool.processes == [kept] and kept.returncode is None
        assert workers() == [kept.pid]
    finally:
        await pool.aclose()
    assert workers() == []


async def test_a_worker_that_dies_is_started_again_by_the_next_reconcile(
    env: dict[str, str], queue: str, servers: Servers
):
    pool = LocalPool(env, start_delay=0, stop_seconds=10)
    engine = create_engine(queue, pool_mode=PoolMode.NULL)
    scaler = Scaler(
        PostgresDemand(engine),
        pool,
        ScalePolicy(min_instances=0, max_instances=2, idle_seconds=60, concurrency=2),
    )
    try:
        await submit(queue, servers.redis.url(), 1)
        assert (await scaler.reconcile("test")).instances == 1
        await until(lambda: pool.running == 1, 20, "the worker")
        (first,) = pool.processes
        await wait_all(queue, "succeeded", 1, timeout=30)
        first.send_signal(signal.SIGKILL)
        await first.wait()
        assert (await pool.read()).instances == 0
        await submit(queue, servers.redis.url(), 1)
        outcome = await scaler.reconcile("test")
        assert (outcome.before, outcome.instances) == (0, 1)
        await until(lambda: pool.running == 1, 20, "another worker")
        assert pool.processes[0].pid != first.pid
        await wait_all(queue, "succeeded", 2, timeout=30)
    finally:
        await pool.aclose()
        await engine.dispose()
    assert workers() == []


async def test_closing_stops_workers_and_pending_starts(pool: LocalPool, env: dict[str, str]):
    await pool.resize(1)
    await until(lambda: pool.running == 1, DELAY + 10, "the worker")
    await pool.resize(3)
    await pool.aclose()
    assert (pool.running, pool.processes, workers()) == (0, [], [])
    await asyncio.sleep(DELAY + 0.5)
    assert workers() == []
