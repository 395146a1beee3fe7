"""The worker's job flow, in-process against real Postgres and Redis."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import asyncpg
import pytest
import redis

from app.worker.providers import LocalProvider, ProviderError
from tests.app.worker.conftest import statuses, submit, wait_all
from tests.conftest import Servers, fetch

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("clean_queue")]


class ScriptedProvider:
    """Fails the first attempts of every job as scripted, then succeeds."""

    name = "scripted"

    def __init__(self, errors: list[ProviderError], *, latency: float = 0.0) -> None:
        self.errors = errors
        self.latency = latency
        self.calls: list[tuple[uuid.UUID, int, float]] = []

    async def generate(
        self, *, job_id: uuid.UUID, attempt: int, prompt: str, model: str, params: dict[str, Any]
    ) -> dict[str, Any]:
        self.calls.append((job_id, attempt, time.monotonic()))
        if self.latency:
            await asyncio.sleep(self.latency)
        if attempt <= len(self.errors):
            raise self.errors[attempt - 1]
        return {"text": f"done on attempt {attempt}"}

    async def aclose(self) -> None:
        return None


async def test_a_job_succeeds_with_its_result_and_one_log_row(servers: Servers, in_process):
    (job_id,) = await submit(servers.dsn, servers.redis.url(), prompt="hello", model="m1")
    async with in_process(LocalProvider()):
        await wait_all(servers.dsn, "succeeded", 1, timeout=10)
    (job,) = await fetch(servers.dsn, "SELECT * FROM generations WHERE id = $1", job_id)
    assert job["attempts"] == 1
    assert job["result"] is not None and "hello" in job["result"]
    assert job["finished_at"] is not None and job["lease_expires_at"] is None and job["leased_by"] is None
    logs = await fetch(servers.dsn, "SELECT * FROM generation_logs WHERE generation_id = $1", job_id)
    assert [(r["attempt"], r["status"], r["provider"]) for r in logs] == [(1, "succeeded", "local")]
    assert logs[0]["duration_ms"] >= 0 and logs[0]["finished_at"] >= logs[0]["started_at"]


async def test_jobs_run_concurrently(servers: Servers, in_process):
    await submit(servers.dsn, servers.redis.url(), 8)
    started = time.monotonic()
    async with in_process(LocalProvider(latency_ms=500), worker_concurrency=8):
        await wait_all(servers.dsn, "succeeded", 8, timeout=10)
    # Eight half-second jobs, one at a time, would take four seconds.
    assert time.monotonic() - started < 3.5


async def test_jobs_without_a_redis_signal_are_found_by_the_sweep(servers: Servers, in_process):
    await submit(servers.dsn, servers.redis.url(), 5, signal_redis=False)
    async with in_process(LocalProvider()):
        await wait_all(servers.dsn, "succeeded", 5, timeout=10)


async def test_retryable_errors_are_retried_with_backoff(servers: Servers, in_process):
    provider = ScriptedProvider([ProviderError("429", retryable=True), ProviderError("503", retryable=True)])
    (job_id,) = await submit(servers.dsn, servers.redis.url())
    async with in_process(provider, worker_retry_base_seconds=0.3, worker_retry_max_seconds=5):
        await wait_all(servers.dsn, "succeeded", 1, timeout=15)
    times = [t for _, _, t in provider.calls]
    assert [a for _, a, _ in provider.calls] == [1, 2, 3]
    # Equal jitter: at least half the exponential delay (0.3 s, then 0.6 s).
    assert times[1] - times[0] >= 0.15
    assert times[2] - times[1] >= 0.3
    logs = await fetch(
        servers.dsn,
        "SELECT attempt, status, error FROM generation_logs WHERE generation_id = $1 ORDER BY id",
        job_id,
    )
    assert [(r["attempt"], r["status"]) for r in logs] == [(1, "retry"), (2, "retry"), (3, "succeeded")]
    assert logs[0]["error"] == "429"


async def test_retry_after_is_honoured(servers: Servers, in_process):
    provider = ScriptedProvider([ProviderError("429", retryable=True, retry_after=1.5)])
    await submit(servers.dsn, servers.redis.url())
    async with in_process(provider, worker_retry_base_seconds=0.05):
        await wait_all(servers.dsn, "succeeded", 1, timeout=15)
    (_, _, first), (_, _, second) = provider.calls
    assert second - first >= 1.5


async def test_exhausted_retries_dead_letter_the_job(servers: Servers, in_process):
    provider = ScriptedProvider([ProviderError(f"boom {i}", retryable=True) for i in range(1, 10)])
    (job_id,) = await submit(servers.dsn, servers.redis.url())
    async with in_process(provider, worker_max_attempts=3) as worker:
        await wait_all(servers.dsn, "failed", 1, timeout=15)
        assert worker.metrics.dead_lettered._value.get() == 1
        assert worker.metrics.retried._value.get() == 2
    (job,) = await fetch(servers.dsn, "SELECT * FROM generations WHERE id = $1", job_id)
    assert (job["attempts"], job["error"]) == (3, "boom 3")
    assert job["finished_at"] is not None
    logs = await fetch(
        servers.dsn, "SELECT status FROM generation_logs WHERE generation_id = $1 ORDER BY id", job_id
    )
    assert [r["status"] for r in logs] == ["retry", "retry", "failed"]


async def test_non_retryable_errors_fail_at_once(servers: Servers, in_process):
    provider = ScriptedProvider([ProviderError("400 bad request", retryable=False)])
    await submit(servers.dsn, servers.redis.url())
    async with in_process(provider):
        await wait_all(servers.dsn, "failed", 1, timeout=10)
    assert len(provider.calls) == 1


async def test_unexpected_exceptions_are_retried(servers: Servers, in_process):
    class Flaky(ScriptedProvider):
        async def generate(self, **kwargs: Any) -> dict[str, Any]:
            if kwargs["attempt"] == 1:
                raise RuntimeError("bug in a dependency")
            return await super().generate(**kwargs)

    await submit(servers.dsn, servers.redis.url())
    async with in_process(Flaky([])):
        await wait_all(servers.dsn, "succeeded", 1, timeout=10)


async def test_a_running_job_is_cancelled_cooperatively(servers: Servers, in_process):
    provider = ScriptedProvider([], latency=30)
    (job_id,) = await submit(servers.dsn, servers.redis.url())
    async with in_process(provider) as worker:
        await wait_all(servers.dsn, "running", 1, timeout=10)
        conn = await asyncpg.connect(servers.dsn)
        try:
            await conn.execute("UPDATE generations SET cancel_requested = true WHERE id = $1", job_id)
        finally:
            await conn.close()
        started = time.monotonic()
        await wait_all(servers.dsn, "cancelled", 1, timeout=10)
        assert time.monotonic() - started < 5
        assert worker.metrics.cancelled._value.get() == 1
    logs = await fetch(servers.dsn, "SELECT status FROM generation_logs WHERE generation_id = $1", job_id)
    assert [r["status"] for r in logs] == ["cancelled"]


async def test_a_job_cancelled_before_it_starts_never_runs(servers: Servers, in_process):
    provider = ScriptedProvider([])
    (job_id,) = await submit(servers.dsn, servers.redis.url())
    conn = await asyncpg.connect(servers.dsn)
    try:
        await conn.execute(
            "UPDATE generations SET ai_status = 'cancelled', cancel_requested = true WHERE id = $1", job_id
        )
    finally:
        await conn.close()
    async with in_process(provider):
        await asyncio.sleep(1.0)
    assert provider.calls == []
    assert await statuses(servers.dsn) == {"cancelled": 1}


async def test_a_dead_workers_lease_is_recovered_and_the_lost_attempt_logged(servers: Servers, in_process):
    (job_id,) = await submit(servers.dsn, servers.redis.url(), signal_redis=False)
    conn = await asyncpg.connect(servers.dsn)
    try:
        # As a worker that claimed the job and then died.
        await conn.execute(
            "UPDATE generations SET ai_status = 'running', attempts = 1, leased_by = 'dead:1',"
            " lease_expires_at = now() - interval '1 second', updated_at = now() - interval '3 seconds'"
            " WHERE id = $1",
            job_id,
        )
    finally:
        await conn.close()
    async with in_process(LocalProvider()) as worker:
        await wait_all(servers.dsn, "succeeded", 1, timeout=10)
        assert worker.metrics.recovered._value.get() == 1
    logs = await fetch(
        servers.dsn,
        "SELECT attempt, status FROM generation_logs WHERE generation_id = $1 ORDER BY id",
        job_id,
    )
    assert [(r["attempt"], r["status"]) for r in logs] == [(1, "lost"), (2, "succeeded")]


async def test_recovered_jobs_run_at_full_concurrency_without_waiting_for_the_next_sweep(
    servers: Servers, in_process
):
    """The sweep signals what it hands back: the idle fetch loop, parked in a long BRPOP, wakes
    and claims them all, instead of the sweep taking a few per period."""
    ids = await submit(servers.dsn, servers.redis.url(), 12, signal_redis=False)
    conn = await asyncpg.connect(servers.dsn)
    try:
        await conn.execute(
            "UPDATE generations SET ai_status = 'running', attempts = 1, leased_by = 'dead:1',"
            " lease_expires_at = now() - interval '1 second', updated_at = now() - interval '3 seconds'"
            " WHERE id = ANY($1)",
            ids,
        )
    finally:
        await conn.close()
    provider = ScriptedProvider([], latency=0.3)
    # The first sweep runs at start; the next would come only after 60 s, the next wake-up
    # from Redis on its own after 120 s.
    overrides = {"worker_sweep_seconds": 60.0, "worker_wait_seconds": 120, "worker_concurrency": 4}
    async with in_process(provider, **overrides) as worker:
        await wait_all(servers.dsn, "succeeded", 12, timeout=20)
        assert worker.metrics.recovered._value.get() == 12
    # At full concurrency: some moment had four attempts in flight at once.
    starts = [started for _, _, started in provider.calls]
    assert len(starts) == 12
    assert max(sum(1 for s in starts if t <= s < t + 0.3) for t in starts) == 4


async def test_a_lost_lease_discards_the_late_result(servers: Servers, in_process):
    provider = ScriptedProvider([], latency=1.0)
    (job_id,) = await submit(servers.dsn, servers.redis.url())
    async with in_process(provider):
        await wait_all(servers.dsn, "running", 1, timeout=10)
        conn = await asyncpg.connect(servers.dsn)
        try:
            # Another worker took the job over meanwhile.
            await conn.execute(
                "UPDATE generations SET leased_by = 'other:2', attempts = 2,"
                " lease_expires_at = now() + interval '1 hour' WHERE id = $1",
                job_id,
            )
        finally:
            await conn.close()
        await asyncio.sleep(2.0)
    (job,) = await fetch(
        servers.dsn, "SELECT ai_status, result, leased_by FROM generations WHERE id = $1", job_id
    )
    assert (job["ai_status"], job["result"], job["leased_by"]) == ("running", None, "other:2")


async def test_idle_worker_sends_one_redis_command_per_wait(servers: Servers, in_process):
    client = redis.Redis.from_url(servers.redis.url())
    client.config_resetstat()
    async with in_process(LocalProvider(), worker_wait_seconds=1, worker_sweep_seconds=0.2):
        await asyncio.sleep(3.5)
    stats = client.info("commandstats")
    calls = {name.removeprefix("cmdstat_"): value["calls"] for name, value in stats.items()}
    calls.pop("config|resetstat", None)
    calls.pop("config", None)
    # BRPOP once a second here (WORKER_WAIT_SECONDS=1), and the connection's one-time handshake.
    assert set(calls) <= {"brpop", "hello", "client|setinfo", "client"}, calls
    assert calls.get("brpop", 0) <= 5
    assert calls.get("hello", 0) <= 1


async def test_two_redis_commands_per_job(servers: Servers, in_process):
    client = redis.Redis.from_url(servers.redis.url())
    async with in_process(LocalProvider(), worker_wait_seconds=30, worker_sweep_seconds=30):
        await asyncio.sleep(0.5)
        client.config_resetstat()
        for _ in range(20):
            await submit(servers.dsn, servers.redis.url())
        await wait_all(servers.dsn, "succeeded", 20, timeout=15)
        calls = {k.removeprefix("cmdstat_"): v["calls"] for k, v in client.info("commandstats").items()}
    # One LPUSH from the submitter (the API) and one BRPOP in the worker per job, plus the
    # handshakes of connections opened meanwhile.
    assert calls.get("lpush") == 20, calls
    assert calls.get("brpop", 0) <= 20 + 1, calls
