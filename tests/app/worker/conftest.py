"""Fixtures for worker tests: jobs in real Postgres, workers in-process or as real processes."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import redis

from app.core.queue import QUEUE_KEY
from app.local.servers import free_port
from app.settings import Settings
from app.worker.providers import Provider
from app.worker.runner import Worker
from tests.conftest import ORG_A, USER_A, Servers, truncate

# Fast timings so that leases, sweeps and retries play out in seconds.
FAST: dict[str, Any] = {
    "worker_lease_seconds": 2.0,
    "worker_sweep_seconds": 0.25,
    "worker_wait_seconds": 1,
    "worker_retry_base_seconds": 0.05,
    "worker_retry_max_seconds": 0.5,
    "worker_shutdown_grace_seconds": 1.0,
}


@pytest.fixture
def worker_settings(servers: Servers) -> Settings:
    return Settings(
        app_env="test",
        database_url=servers.dsn,
        redis_url=servers.redis.url(),
        log_format="console",
        log_level="WARNING",
        **FAST,
    )


@pytest.fixture
async def clean_queue(servers: Servers) -> AsyncIterator[None]:
    await truncate(servers.dsn)
    redis.Redis.from_url(servers.redis.url()).flushall()
    conn = await asyncpg.connect(servers.dsn)
    try:
        await conn.execute("INSERT INTO organizations (id) VALUES ($1) ON CONFLICT DO NOTHING", ORG_A)
    finally:
        await conn.close()
    yield
    await truncate(servers.dsn)


async def submit(
    dsn: str, redis_url: str, count: int = 1, *, signal_redis: bool = True, **columns: Any
) -> list[uuid.UUID]:
    """Insert queued jobs as the API would, and signal them."""
    conn = await asyncpg.connect(dsn)
    try:
        ids = [
            await conn.fetchval(
                "INSERT INTO generations (organization_id, created_by, prompt, model, params)"
                " VALUES ($1, $2, $3, $4, $5::jsonb) RETURNING id",
                ORG_A,
                USER_A,
                columns.get("prompt", f"prompt {i}"),
                columns.get("model", "test-model"),
                json.dumps(columns.get("params", {})),
            )
            for i in range(count)
        ]
    finally:
        await conn.close()
    if signal_redis:
        redis.Redis.from_url(redis_url).lpush(QUEUE_KEY, *[str(i) for i in ids])
    return ids


async def statuses(dsn: str) -> dict[str, int]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT ai_status, count(*) AS n FROM generations GROUP BY ai_status")
    finally:
        await conn.close()
    return {row["ai_status"]: row["n"] for row in rows}


async def wait_for(predicate: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.1)


async def wait_all(dsn: str, status: str, count: int, timeout: float = 60.0) -> None:
    async def done() -> bool:
        return (await statuses(dsn)).get(status, 0) == count

    try:
        await wait_for(done, timeout, f"{count} jobs {status}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; statuses now {await statuses(dsn)}") from None


class InProcessWorker:
    """A Worker running as a task of the test's event loop."""

    def __init__(self, settings: Settings, provider: Provider | None = None) -> None:
        self.worker = Worker(settings, provider=provider)
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Worker:
        self.task = asyncio.create_task(self.worker.run(install_signals=False, serve_http=False))
        return self.worker

    async def __aexit__(self, *exc: object) -> None:
        self.worker.stop()
        assert self.task is not None
        await asyncio.wait_for(self.task, timeout=15)


@pytest.fixture
def in_process(worker_settings: Settings) -> Callable[..., InProcessWorker]:
    def make(provider: Provider | None = None, **overrides: Any) -> InProcessWorker:
        return InProcessWorker(worker_settings.model_copy(update=overrides), provider)

    return make


class WorkerProcess:
    """`python -m app worker` as a real process, to be killed, stopped and restarted."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env = env
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "app", "worker"], env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        return self

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def terminate(self) -> float:
        """SIGTERM; seconds until the process exited."""
        assert self.process is not None
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=30)
        return time.monotonic() - started

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log(self) -> str:
        return self.log_path.read_text()


@pytest.fixture
def worker_process(servers: Servers, tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    started: list[WorkerProcess] = []

    def make(**overrides: Any) -> WorkerProcess:
        settings = {**FAST, "worker_concurrency": 4, **overrides}
        env = {
            **{
                k: v for k, v in os.environ.items() if not k.startswith(("WORKER_", "LOCAL_PROVIDER_", "AI_"))
            },
            "APP_ENV": "test",
            "DATABASE_URL": servers.dsn,
            "REDIS_URL": servers.redis.url(),
            "PORT": str(free_port()),
            "LOG_FORMAT": "json",
            "LOG_LEVEL": "INFO",
            **{key.upper(): str(value) for key, value in settings.items()},
        }
        process = WorkerProcess(env, tmp_path / f"worker-{len(started)}.log")
        started.append(process)
        return process

    yield make
    for process in started:
        if process.alive:
            process.kill()
