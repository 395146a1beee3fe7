"""The API in each pool mode, with and without transaction-pooler statement handling."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest
from fastapi import FastAPI

from app.main import create_app
from app.settings import PoolMode, Settings
from tests.conftest import Servers, truncate

pytestmark = pytest.mark.integration


@pytest.fixture(
    params=[(PoolMode.QUEUE, True), (PoolMode.NULL, True), (PoolMode.QUEUE, False)],
    ids=["pool-behind-pooler", "null-behind-pooler", "pool-direct"],
)
async def pooled_client(request, settings: Settings, servers: Servers) -> AsyncIterator[httpx.AsyncClient]:
    mode, pooler = request.param
    app: FastAPI = create_app(
        settings.model_copy(update={"db_pool_mode": mode, "db_transaction_pooler": pooler})
    )
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
            yield http
    await truncate(servers.dsn)


async def test_every_route_works_in_every_mode(pooled_client, auth_a, servers: Servers):
    key = {"Idempotency-Key": "k-1", **auth_a}
    created = await pooled_client.post("/v1/generations", json={"prompt": "p"}, headers=key)
    assert created.status_code == 202
    replay = await pooled_client.post("/v1/generations", json={"prompt": "p"}, headers=key)
    assert replay.json()["id"] == created.json()["id"]
    job = created.json()["id"]
    assert (await pooled_client.get(f"/v1/generations/{job}", headers=auth_a)).status_code == 200
    assert len((await pooled_client.get("/v1/generations", headers=auth_a)).json()["items"]) == 1
    cancelled = await pooled_client.post(f"/v1/generations/{job}/cancel", headers=auth_a)
    assert cancelled.json()["status"] == "cancelled"
    assert (await pooled_client.get("/ready")).status_code == 200
    assert 'liftoff_jobs{status="cancelled"} 1.0' in (await pooled_client.get("/metrics")).text


async def test_behind_the_pooler_no_statement_is_prepared_by_name(
    settings: Settings, servers: Servers, auth_a
):
    """A transaction-mode pooler may hand the next transaction another backend: no statement
    may outlive its transaction by name."""
    app: FastAPI = create_app(settings.model_copy(update={"db_transaction_pooler": True}))
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
            for _ in range(3):
                assert (
                    await http.post("/v1/generations", json={"prompt": "p"}, headers=auth_a)
                ).status_code == 202
            async with app.state.api.db.connection() as conn:
                assert await conn.fetchval("SELECT count(*) FROM pg_prepared_statements") == 0
    conn = await asyncpg.connect(servers.dsn)
    try:
        assert await conn.fetchval("SELECT count(*) FROM generations") == 3
    finally:
        await conn.close()
    await truncate(servers.dsn)
