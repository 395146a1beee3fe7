"""Liveness and readiness, including real outages of Postgres and Redis."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from tests.conftest import Servers

pytestmark = pytest.mark.integration


async def test_health_is_ok(client):
    response = await client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_ready_when_both_answer(client):
    response = await client.get("/ready")
    assert response.status_code == 200
    assert response.json() == {"status": "ready", "checks": {"postgres": "ok", "redis": "ok"}}


async def _wait_ready(client: httpx.AsyncClient, timeout: float = 20.0) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while True:
        response = await client.get("/ready")
        if response.status_code == 200 or time.monotonic() > deadline:
            return response
        await asyncio.sleep(0.2)


async def test_ready_is_503_naming_redis_while_it_is_down(client, servers: Servers):
    servers.redis.stop()
    try:
        response = await client.get("/ready")
        assert response.status_code == 503
        assert response.json() == {"error": {"code": "not_ready", "message": "Unavailable: redis."}}
        assert (await client.get("/health")).status_code == 200
    finally:
        servers.redis.start()
    assert (await _wait_ready(client)).status_code == 200


async def test_ready_is_503_naming_postgres_while_it_is_down(client, servers: Servers):
    servers.postgres.stop()
    try:
        started = time.monotonic()
        response = await client.get("/ready")
        assert time.monotonic() - started < 5
        assert response.status_code == 503
        assert response.json() == {"error": {"code": "not_ready", "message": "Unavailable: postgres."}}
    finally:
        servers.postgres.start()
    assert (await _wait_ready(client)).status_code == 200


async def test_ready_names_both_when_both_are_down(client, servers: Servers):
    servers.postgres.stop()
    servers.redis.stop()
    try:
        response = await client.get("/ready")
        assert response.status_code == 503
        assert response.json()["error"]["message"] == "Unavailable: postgres, redis."
    finally:
        servers.postgres.start()
        servers.redis.start()
    assert (await _wait_ready(client)).status_code == 200


async def test_api_serves_again_after_postgres_restarts(client, servers: Servers, auth_a):
    assert (
        await client.post("/v1/generations", json={"prompt": "before"}, headers=auth_a)
    ).status_code == 202
    servers.postgres.stop()
    servers.postgres.start()
    response = await client.post("/v1/generations", json={"prompt": "after"}, headers=auth_a)
    assert response.status_code == 202
