"""No accepted job is lost: real worker processes, SIGKILLed, drained, and cut off from their servers."""

from __future__ import annotations

import asyncio
import json
import random
import time
import urllib.request

import pytest
import redis

from tests.app.worker.conftest import statuses, submit, wait_all
from tests.conftest import Servers, fetch

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("clean_queue")]


async def assert_each_succeeded_exactly_once(dsn: str, count: int) -> None:
    rows = await fetch(
        dsn,
        "SELECT g.id, g.ai_status, g.result IS NOT NULL AS has_result,"
        " count(l.id) FILTER (WHERE l.status = 'succeeded') AS successes"
        " FROM generations g LEFT JOIN generation_logs l ON l.generation_id = g.id GROUP BY g.id",
    )
    assert len(rows) == count
    bad = [
        dict(r) for r in rows if (r["ai_status"], r["has_result"], r["successes"]) != ("succeeded", True, 1)
    ]
    assert not bad, bad[:5]


async def test_kill_storm(servers: Servers, worker_process):
    """SIGKILL workers mid-job again and again: every job still succeeds exactly once."""
    settings = {"local_provider_latency_ms": 250, "worker_concurrency": 4}
    workers = [worker_process(**settings).start() for _ in range(3)]
    await submit(servers.dsn, servers.redis.url(), 200)
    rng = random.Random(7)
    kills = 0
    while kills < 6:
        await asyncio.sleep(0.7)
        if (await statuses(servers.dsn)).get("running", 0) == 0:
            continue
        victim = rng.randrange(len(workers))
        workers[victim].kill()
        kills += 1
        workers[victim] = worker_process(**settings).start()
    await wait_all(servers.dsn, "succeeded", 200, timeout=120)
    await assert_each_succeeded_exactly_once(servers.dsn, 200)
    lost = await fetch(servers.dsn, "SELECT count(*) AS n FROM generation_logs WHERE status = 'lost'")
    assert lost[0]["n"] >= 1, "the kills hit no job mid-run"
    assert kills >= 5


async def test_flushall_mid_run_loses_nothing(servers: Servers, worker_process):
    worker_process(local_provider_latency_ms=100, worker_concurrency=2).start()
    await submit(servers.dsn, servers.redis.url(), 40)
    await asyncio.sleep(0.5)
    redis.Redis.from_url(servers.redis.url()).flushall()
    await wait_all(servers.dsn, "succeeded", 40, timeout=60)
    await assert_each_succeeded_exactly_once(servers.dsn, 40)


async def test_redis_restart_mid_run_loses_nothing(servers: Servers, worker_process):
    worker = worker_process(local_provider_latency_ms=100, worker_concurrency=2).start()
    await submit(servers.dsn, servers.redis.url(), 40)
    await asyncio.sleep(0.5)
    # The test Redis keeps no data across restarts, like Upstash after an eviction.
    servers.redis.stop()
    await asyncio.sleep(1.0)
    servers.redis.start()
    await wait_all(servers.dsn, "succeeded", 40, timeout=60)
    await assert_each_succeeded_exactly_once(servers.dsn, 40)
    assert worker.alive
    await submit(servers.dsn, servers.redis.url(), 5)
    await wait_all(servers.dsn, "succeeded", 45, timeout=30)


async def test_postgres_restart_mid_run_loses_nothing(servers: Servers, worker_process):
    worker = worker_process(local_provider_latency_ms=100, worker_concurrency=4).start()
    await submit(servers.dsn, servers.redis.url(), 60)
    await asyncio.sleep(0.7)
    servers.postgres.stop()
    await asyncio.sleep(1.5)
    servers.postgres.start()
    await wait_all(servers.dsn, "succeeded", 60, timeout=90)
    await assert_each_succeeded_exactly_once(servers.dsn, 60)
    assert worker.alive


async def test_sigterm_drains_releases_and_another_worker_takes_over(servers: Servers, worker_process):
    slow = {
        "local_provider_latency_ms": 20_000,
        "worker_concurrency": 2,
        "worker_shutdown_grace_seconds": 1.0,
    }
    first = worker_process(**slow).start()
    ids = await submit(servers.dsn, servers.redis.url(), 2)
    await wait_all(servers.dsn, "running", 2, timeout=20)
    seconds = first.terminate()
    assert seconds < 9, f"took {seconds:.1f}s to exit"
    assert first.process is not None and first.process.returncode == 0
    # Given back at once, without using up an attempt.
    assert await statuses(servers.dsn) == {"queued": 2}
    rows = await fetch(servers.dsn, "SELECT attempts, leased_by FROM generations")
    assert {(r["attempts"], r["leased_by"]) for r in rows} == {(0, None)}

    started = time.monotonic()
    worker_process(local_provider_latency_ms=50).start()
    await wait_all(servers.dsn, "succeeded", 2, timeout=20)
    # Picked up from the release signal, not after a lease timed out.
    assert time.monotonic() - started < 10
    for job_id in ids:
        logs = await fetch(
            servers.dsn,
            "SELECT attempt, status FROM generation_logs WHERE generation_id = $1 ORDER BY id",
            job_id,
        )
        assert [(r["attempt"], r["status"]) for r in logs] == [(1, "released"), (1, "succeeded")]


async def test_sigterm_lets_short_jobs_finish_within_the_grace(servers: Servers, worker_process):
    worker = worker_process(
        local_provider_latency_ms=1500, worker_concurrency=2, worker_shutdown_grace_seconds=5.0
    ).start()
    await submit(servers.dsn, servers.redis.url(), 2)
    await wait_all(servers.dsn, "running", 2, timeout=20)
    seconds = worker.terminate()
    assert seconds < 9
    assert await statuses(servers.dsn) == {"succeeded": 2}


async def test_worker_serves_health_and_metrics(servers: Servers, worker_process):
    worker = worker_process(worker_concurrency=2).start()
    await submit(servers.dsn, servers.redis.url(), 3)
    await wait_all(servers.dsn, "succeeded", 3, timeout=20)
    port = worker.env["PORT"]
    deadline = time.monotonic() + 10
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:  # noqa: S310
                assert json.loads(response.read()) == {"status": "ok"}
                break
        except OSError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)
    await asyncio.sleep(0.6)  # one sweep, for the queue gauges
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:  # noqa: S310
        text = response.read().decode()
    assert "liftoff_worker_jobs_processed_total 3.0" in text
    assert "liftoff_queue_depth 0.0" in text
    assert "liftoff_queue_oldest_age_seconds" in text
    assert "liftoff_worker_job_duration_seconds_bucket" in text
