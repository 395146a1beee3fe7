"""Each attempt names the worker revision that ran it; release probes run offline and apart."""

from __future__ import annotations

import json
import uuid
from typing import Any

import asyncpg
import pytest
import redis
from prometheus_client import generate_latest

from app.core.probes import PROBE_MODEL, PROBE_ORGANIZATION_ID, PROBE_USER_ID
from app.core.queue import QUEUE_KEY
from tests.app.worker.conftest import submit, wait_all
from tests.conftest import Servers, fetch

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("clean_queue")]


class CountingProvider:
    """Counts its calls: a probe job must never reach the configured provider."""

    name = "openai"

    def __init__(self) -> None:
        self.calls = 0

    async def generate(
        self, *, job_id: uuid.UUID, attempt: int, prompt: str, model: str, params: dict[str, Any]
    ) -> dict[str, Any]:
        self.calls += 1
        return {"text": "paid for"}

    async def aclose(self) -> None:
        return None


async def _submit_probes(dsn: str, redis_url: str, count: int) -> list[uuid.UUID]:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "INSERT INTO organizations (id, name) VALUES ($1, 'probes') ON CONFLICT DO NOTHING",
            PROBE_ORGANIZATION_ID,
        )
        ids = [
            await conn.fetchval(
                "INSERT INTO generations (organization_id, created_by, prompt, model, params)"
                " VALUES ($1, $2, 'probe', $3, $4::jsonb) RETURNING id",
                PROBE_ORGANIZATION_ID,
                PROBE_USER_ID,
                PROBE_MODEL,
                json.dumps({}),
            )
            for _ in range(count)
        ]
    finally:
        await conn.close()
    redis.Redis.from_url(redis_url).lpush(QUEUE_KEY, *[str(i) for i in ids])
    return ids


async def test_every_attempt_names_the_revision_of_the_worker_that_ran_it(servers: Servers, in_process):
    await submit(servers.dsn, servers.redis.url(), count=3)
    async with in_process(cloud_run_worker_pool_revision="liftoff-worker-00042-abc"):
        await wait_all(servers.dsn, "succeeded", 3, timeout=10)
    rows = await fetch(servers.dsn, "SELECT revision, status FROM generation_logs")
    assert [(r["revision"], r["status"]) for r in rows] == [("liftoff-worker-00042-abc", "succeeded")] * 3
    leases = await fetch(servers.dsn, "SELECT lease_revision FROM generations")
    assert {r["lease_revision"] for r in leases} == {None}, "a finished job holds no lease"


async def test_a_lost_attempt_is_charged_to_the_revision_that_held_the_lease(servers: Servers, in_process):
    (job_id,) = await submit(servers.dsn, servers.redis.url(), signal_redis=False)
    conn = await asyncpg.connect(servers.dsn)
    try:
        # As a worker of revision "candidate" that claimed the job and then died.
        await conn.execute(
            "UPDATE generations SET ai_status = 'running', attempts = 1, leased_by = 'dead:1',"
            " lease_revision = 'candidate', lease_expires_at = now() - interval '1 second',"
            " updated_at = now() - interval '3 seconds' WHERE id = $1",
            job_id,
        )
    finally:
        await conn.close()
    async with in_process(cloud_run_worker_pool_revision="stable"):
        await wait_all(servers.dsn, "succeeded", 1, timeout=10)
    logs = await fetch(
        servers.dsn,
        "SELECT status, revision FROM generation_logs WHERE generation_id = $1 ORDER BY id",
        job_id,
    )
    assert [(r["status"], r["revision"]) for r in logs] == [("lost", "candidate"), ("succeeded", "stable")]


async def test_probe_jobs_run_offline_and_are_counted_apart(servers: Servers, in_process):
    paid = CountingProvider()
    await _submit_probes(servers.dsn, servers.redis.url(), 2)
    await submit(servers.dsn, servers.redis.url(), count=1)
    async with in_process(paid) as worker:
        await wait_all(servers.dsn, "succeeded", 3, timeout=10)
        metrics = generate_latest(worker.metrics.registry).decode()
    assert paid.calls == 1, "only the real tenant's job reaches the configured provider"
    assert 'liftoff_worker_probe_attempts_total{outcome="succeeded"} 2.0' in metrics
    assert "liftoff_worker_jobs_processed_total 1.0" in metrics
    rows = await fetch(
        servers.dsn,
        "SELECT provider, count(*) AS n FROM generation_logs WHERE organization_id = $1 GROUP BY 1",
        PROBE_ORGANIZATION_ID,
    )
    assert [(r["provider"], r["n"]) for r in rows] == [("local", 2)]


async def test_a_faulty_revision_fails_its_share_of_attempts_and_the_jobs_still_finish(
    servers: Servers, in_process
):
    await submit(servers.dsn, servers.redis.url(), count=20)
    # Half the attempts fail: with 20 attempts each, no job runs out of them (0.5 ** 20).
    async with in_process(
        fault_job_error_ratio=0.5, cloud_run_worker_pool_revision="faulty", worker_max_attempts=20
    ):
        await wait_all(servers.dsn, "succeeded", 20, timeout=30)
    rows = await fetch(servers.dsn, "SELECT status, count(*) AS n FROM generation_logs GROUP BY 1")
    counts = {r["status"]: r["n"] for r in rows}
    assert counts["succeeded"] == 20
    assert counts.get("retry", 0) >= 3, f"about half the first attempts fail: {counts}"
    errors = await fetch(servers.dsn, "SELECT DISTINCT error FROM generation_logs WHERE status = 'retry'")
    assert [r["error"] for r in errors] == ["FAULT_JOB_ERROR_RATIO: simulated worker fault"]


@pytest.mark.unit
def test_the_fault_roll_is_fixed_by_job_and_attempt():
    from datetime import UTC, datetime

    from app.worker.runner import _roll
    from app.worker.store import ClaimedJob

    job = ClaimedJob(uuid.uuid4(), uuid.uuid4(), "p", "m", {}, 1, datetime.now(UTC))
    assert _roll(job) == _roll(job)
    assert 0 <= _roll(job) < 1


@pytest.mark.unit
def test_a_worker_in_the_cloud_without_its_revision_refuses_to_start():
    from app.settings import Role, Settings, SettingsError

    def cloud(**more: str) -> Settings:
        return Settings(app_env="prod", database_url="postgresql://x@h/d", redis_url="redis://h", **more)  # type: ignore[arg-type]

    with pytest.raises(SettingsError, match="CLOUD_RUN_WORKER_POOL_REVISION"):
        cloud().require(Role.WORKER).require_revision()
    assert cloud(cloud_run_worker_pool_revision="liftoff-prod-worker-0001").require_revision()
    assert Settings(app_env="local").require_revision()
    # The cleanup job runs with the worker's settings as a Cloud Run job, which has no pool revision.
    assert cloud().require(Role.WORKER)


@pytest.mark.unit
def test_the_worker_command_refuses_to_start_in_the_cloud_without_its_revision():
    import subprocess
    import sys

    env = {
        "APP_ENV": "prod",
        "DATABASE_URL": "postgresql://x@h/d",
        "REDIS_URL": "redis://h",
        "PATH": "/usr/bin:/bin",
    }
    done = subprocess.run(
        [sys.executable, "-m", "app", "worker"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "worker needs CLOUD_RUN_WORKER_POOL_REVISION" in done.stderr
