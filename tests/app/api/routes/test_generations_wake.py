"""With WORKER_WAKE_URL set, an accepted job wakes the worker pool's scaler: once per interval,
after the 202, which never waits for the scaler."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import httpx
import pytest
from fastapi import FastAPI
from redis.asyncio import Redis

from app.core.wake import WAIT_SECONDS, WAKE_KEY
from app.local.servers import free_port
from app.main import create_app
from app.settings import Settings
from tests.conftest import Servers, truncate
from tests.http_double import Reply, Request, Served, serve_json

pytestmark = pytest.mark.integration

URL = "/v1/generations"
OUTCOME = {"before": 0, "instances": 1, "reason": "queue", "queued": 1, "running": 0}
SLOW_SECONDS = 3.0  # longer than the wake's bound


def wakes(served: Served) -> list[Request]:
    return [r for r in served.requests if (r.method, r.path) == ("POST", "/wake")]


async def wait_for_wakes(served: Served, count: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while len(wakes(served)) < count and time.monotonic() < deadline:
        await asyncio.sleep(0.02)


@pytest.fixture
async def no_recent_wake(servers: Servers) -> AsyncIterator[None]:
    async with Redis.from_url(servers.redis.url()) as redis:
        await redis.delete(WAKE_KEY)
        yield
        await redis.delete(WAKE_KEY)


@asynccontextmanager
async def api(settings: Settings, servers: Servers) -> AsyncIterator[httpx.AsyncClient]:
    application: FastAPI = create_app(settings)
    try:
        async with application.router.lifespan_context(application):
            transport = httpx.ASGITransport(app=application)
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
                yield client
    finally:
        await truncate(servers.dsn)


@pytest.fixture
def scaler() -> Iterator[Served]:
    with serve_json(lambda request: Reply(200, OUTCOME)) as served:
        yield served


@pytest.fixture
def slow_scaler() -> Iterator[Served]:
    with serve_json(lambda request: Reply(200, OUTCOME, delay=SLOW_SECONDS)) as served:
        yield served


async def test_an_accepted_job_wakes_the_scaler_once(
    settings: Settings, servers: Servers, scaler: Served, auth_a, no_recent_wake
):
    settings = settings.model_copy(update={"worker_wake_url": f"{scaler.url}/wake"})
    async with api(settings, servers) as client:
        response = await client.post(URL, json={"prompt": "wake up"}, headers=auth_a)
        assert response.status_code == 202, response.text
        # Sent before the 202, while the request has CPU (a request-billed instance has none after).
        assert len(wakes(scaler)) == 1
        # More jobs within WORKER_WAKE_SECONDS (10 s): the pool is already being started.
        for i in range(3):
            assert (await client.post(URL, json={"prompt": f"more {i}"}, headers=auth_a)).status_code == 202
        # A replay accepts no new job, so it wakes nothing either.
        replay = {**auth_a, "Idempotency-Key": "once"}
        for _ in range(2):
            assert (await client.post(URL, json={"prompt": "once"}, headers=replay)).status_code == 202
    assert len(wakes(scaler)) == 1
    assert wakes(scaler)[0].body is None


async def test_the_202_waits_for_a_slow_scaler_at_most_the_bound(
    settings: Settings, servers: Servers, slow_scaler: Served, auth_a, no_recent_wake
):
    settings = settings.model_copy(update={"worker_wake_url": f"{slow_scaler.url}/wake"})
    async with api(settings, servers) as client:
        started = time.monotonic()
        response = await client.post(URL, json={"prompt": "no waiting"}, headers=auth_a)
        took = time.monotonic() - started
        assert response.status_code == 202, response.text
        assert took < WAIT_SECONDS + 0.5 < SLOW_SECONDS, took
        # The request is under way while the answer is already out.
        await wait_for_wakes(slow_scaler, 1)
        assert len(wakes(slow_scaler)) == 1
        assert (await client.get(f"{URL}/{response.json()['id']}", headers=auth_a)).status_code == 200


async def test_a_scaler_that_is_down_changes_nothing_for_the_client(
    settings: Settings, servers: Servers, auth_a, no_recent_wake
):
    settings = settings.model_copy(update={"worker_wake_url": f"http://127.0.0.1:{free_port()}/wake"})
    async with api(settings, servers) as client:
        for i in range(2):
            response = await client.post(URL, json={"prompt": f"still accepted {i}"}, headers=auth_a)
            assert response.status_code == 202, response.text


async def test_without_a_wake_url_nothing_is_woken(
    settings: Settings, servers: Servers, scaler: Served, auth_a, no_recent_wake
):
    assert settings.worker_wake_url is None
    async with api(settings, servers) as client:
        assert (await client.post(URL, json={"prompt": "fixed pool"}, headers=auth_a)).status_code == 202
    assert scaler.requests == []
