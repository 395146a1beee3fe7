"""Dependencies down, stopped or frozen: 503 with Retry-After within a bounded time, never a 500.

Each test gets its own Postgres and Redis servers, since it stops or freezes them.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from app.local.servers import LocalPostgres, LocalRedis, free_port
from app.main import create_app
from app.migrate import upgrade
from app.settings import Settings
from tests.conftest import JWT_SECRET

pytestmark = pytest.mark.integration

REQUEST_TIMEOUT = 1.5
# The bound a frozen dependency may cost a request: the timeout, and scheduling slack.
BOUND = REQUEST_TIMEOUT + 2.0
JOB = "00000000-0000-4000-8000-000000000001"
ROUTES = [
    ("POST", "/v1/generations", {"prompt": "p"}),
    ("GET", "/v1/generations", None),
    ("GET", f"/v1/generations/{JOB}", None),
    ("POST", f"/v1/generations/{JOB}/cancel", None),
]


@dataclass
class Own:
    postgres: LocalPostgres
    redis: LocalRedis


def _processes(server: LocalPostgres | LocalRedis) -> list[int]:
    """The server's process and all its children (Postgres: one backend per connection)."""
    assert server.process is not None
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # The command name may hold spaces and parentheses: the fields follow the last ")".
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    tree = [server.process.pid]
    for pid in tree:
        tree += [child for child, parent in parents.items() if parent == pid]
    return tree


def freeze(server: LocalPostgres | LocalRedis) -> list[int]:
    """SIGSTOP the server and all its backends: it accepts connections and answers nothing."""
    frozen = _processes(server)
    for pid in frozen:
        os.kill(pid, signal.SIGSTOP)
    return frozen


def thaw(frozen: list[int]) -> None:
    for pid in frozen:
        try:
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            pass


@pytest.fixture
def own(tmp_path: Path) -> Iterator[Own]:
    postgres = LocalPostgres(tmp_path / "pg", free_port(), durable=False).start()
    redis = LocalRedis(tmp_path / "redis", free_port(), durable=False).start()
    try:
        upgrade(postgres.dsn())
        yield Own(postgres, redis)
    finally:
        for server in (postgres, redis):
            if server.process is not None and server.process.poll() is None:
                thaw(_processes(server))
        redis.stop()
        postgres.stop()


@pytest.fixture
async def client(own: Own) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(
        app_env="test",
        database_url=own.postgres.dsn(),
        redis_url=own.redis.url(),
        supabase_jwt_secret=JWT_SECRET,
        log_format="console",
        db_request_timeout_seconds=REQUEST_TIMEOUT,
        db_connect_timeout_seconds=1.0,
        ready_timeout_seconds=1.0,
    )
    app: FastAPI = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            yield http


async def _call(client: httpx.AsyncClient, auth: dict[str, str], method: str, path: str, body: object):
    started = time.monotonic()
    response = await client.request(method, path, json=body, headers=auth)
    return response, time.monotonic() - started


def _assert_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert int(response.headers["Retry-After"]) > 0
    assert response.json()["error"]["code"] == "unavailable"


async def test_postgres_stopped_is_503_on_every_route(client, own: Own, auth_a):
    # Warm: pooled connections exist, and die with the server.
    assert (await client.post("/v1/generations", json={"prompt": "p"}, headers=auth_a)).status_code == 202
    own.postgres.stop()
    for method, path, body in ROUTES:
        response, seconds = await _call(client, auth_a, method, path, body)
        _assert_unavailable(response)
        assert seconds < BOUND, (path, seconds)
    assert (await client.get("/ready")).status_code == 503
    assert (await client.get("/health")).status_code == 200
    # Request metrics are still served; job gauges keep their last value.
    assert (await client.get("/metrics")).status_code == 200
    own.postgres.start()
    assert (await client.post("/v1/generations", json={"prompt": "p"}, headers=auth_a)).status_code == 202


async def test_postgres_frozen_is_503_within_the_request_timeout(client, own: Own, auth_a):
    assert (await client.post("/v1/generations", json={"prompt": "p"}, headers=auth_a)).status_code == 202
    frozen = freeze(own.postgres)
    try:
        for method, path, body in ROUTES:
            response, seconds = await _call(client, auth_a, method, path, body)
            _assert_unavailable(response)
            assert seconds < BOUND, (path, seconds)
        started = time.monotonic()
        assert (await client.get("/ready")).status_code == 503
        assert time.monotonic() - started < BOUND
    finally:
        thaw(frozen)
    # Once it answers again, so does the API: connections stuck on the frozen server are gone.
    deadline = time.monotonic() + 10
    while True:
        response = await client.post("/v1/generations", json={"prompt": "p"}, headers=auth_a)
        if response.status_code == 202 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    assert response.status_code == 202


async def test_new_connections_to_a_frozen_postgres_time_out_too(client, own: Own, auth_a):
    """Nothing pooled: the connect itself meets the frozen server."""
    frozen = freeze(own.postgres)
    try:
        response, seconds = await _call(client, auth_a, "POST", "/v1/generations", {"prompt": "p"})
        _assert_unavailable(response)
        assert seconds < BOUND
    finally:
        thaw(frozen)


@pytest.mark.parametrize("fault", ["stopped", "frozen"])
async def test_redis_down_still_accepts_jobs_in_bounded_time(client, own: Own, auth_a, fault):
    """Redis is only the wake-up signal: the job is committed, and the sweep will find it."""
    frozen: list[int] = []
    if fault == "stopped":
        own.redis.stop()
    else:
        frozen = freeze(own.redis)
    try:
        response, seconds = await _call(client, auth_a, "POST", "/v1/generations", {"prompt": "p"})
        assert response.status_code == 202
        assert seconds < BOUND
        ready = await client.get("/ready")
        assert ready.status_code == 503
        assert ready.headers["Retry-After"]
        assert ready.json()["error"]["message"] == "Unavailable: redis."
    finally:
        thaw(frozen)
