"""Retention: old generation_logs go in batches; recent ones and the jobs stay."""

from __future__ import annotations

import subprocess
import sys

import asyncpg
import pytest

from app.worker.retention import delete_old_logs
from tests.app.worker.conftest import submit
from tests.conftest import Servers, fetch

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("clean_queue")]


async def _seed_logs(dsn: str, redis_url: str, old: int, recent: int) -> None:
    (job_id,) = await submit(dsn, redis_url, signal_redis=False)
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "INSERT INTO generation_logs"
            " (generation_id, organization_id, attempt, status, provider, started_at, created_at)"
            " SELECT $1, organization_id, n, 'retry', 'local', now(), now() - interval '40 days'"
            " FROM generations, generate_series(1, $2) AS n WHERE id = $1",
            job_id,
            old,
        )
        await conn.execute(
            "INSERT INTO generation_logs"
            " (generation_id, organization_id, attempt, status, provider, started_at)"
            " SELECT $1, organization_id, n, 'succeeded', 'local', now()"
            " FROM generations, generate_series(1, $2) AS n WHERE id = $1",
            job_id,
            recent,
        )
    finally:
        await conn.close()


async def test_deletes_only_old_logs_in_batches(servers: Servers):
    await _seed_logs(servers.dsn, servers.redis.url(), old=25, recent=3)
    assert await delete_old_logs(servers.dsn, days=30, batch=10) == 25
    rows = await fetch(servers.dsn, "SELECT status FROM generation_logs")
    assert [r["status"] for r in rows] == ["succeeded"] * 3
    assert len(await fetch(servers.dsn, "SELECT id FROM generations")) == 1
    assert await delete_old_logs(servers.dsn, days=30, batch=10) == 0


async def test_cleanup_command(servers: Servers):
    await _seed_logs(servers.dsn, servers.redis.url(), old=4, recent=1)
    env = {
        "DATABASE_URL": servers.dsn,
        "REDIS_URL": servers.redis.url(),
        "LOG_FORMAT": "json",
        "PATH": "/usr/bin:/bin",
    }
    result = subprocess.run(
        [sys.executable, "-m", "app", "cleanup", "--days", "30", "--batch", "3"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert '"deleted": 4' in result.stdout
    assert len(await fetch(servers.dsn, "SELECT id FROM generation_logs")) == 1


@pytest.mark.parametrize("args", [["--days", "0"], ["--batch", "-1"]])
def test_cleanup_rejects_bad_arguments(servers: Servers, args):
    env = {"DATABASE_URL": servers.dsn, "REDIS_URL": servers.redis.url(), "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-m", "app", "cleanup", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "--days and --batch must be positive" in result.stderr
