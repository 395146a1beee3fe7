"""Abuse from a careful, hostile client: limits, odd JSON and query strings, headers, slowness."""

from __future__ import annotations

import asyncio
import math
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import asyncpg
import httpx
import pytest

from app.local.servers import free_port
from app.migrate import apply_tenant_limits
from app.settings import Settings
from tests.conftest import JWT_SECRET, ORG_A, Servers, bearer, make_token

pytestmark = pytest.mark.integration


async def _limits(dsn: str, active: int | None, per_minute: int | None) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "UPDATE liftoff.tenant_limits SET max_active_jobs = $1, max_submissions_per_minute = $2",
            active,
            per_minute,
        )
    finally:
        await conn.close()


def _assert_limited(response: httpx.Response, fragment: str) -> None:
    assert response.status_code == 429, response.text
    assert response.json()["error"]["code"] == "tenant_limit"
    assert fragment in response.json()["error"]["message"]
    assert 1 <= int(response.headers["Retry-After"]) <= 60


class TestTenantLimits:
    async def test_active_jobs_cap_is_429_with_retry_after(self, client, auth_a, auth_b, servers: Servers):
        await _limits(servers.dsn, 3, None)
        for i in range(3):
            response = await client.post("/v1/generations", json={"prompt": f"p{i}"}, headers=auth_a)
            assert response.status_code == 202
        _assert_limited(
            await client.post("/v1/generations", json={"prompt": "p"}, headers=auth_a), "queued or running"
        )
        # Another tenant is not held to this one's jobs.
        assert (await client.post("/v1/generations", json={"prompt": "p"}, headers=auth_b)).status_code == 202

    async def test_concurrent_submissions_never_pass_the_cap(self, client, auth_a, servers: Servers):
        await _limits(servers.dsn, 5, None)
        responses = await asyncio.gather(
            *(client.post("/v1/generations", json={"prompt": f"p{i}"}, headers=auth_a) for i in range(30))
        )
        codes = sorted(r.status_code for r in responses)
        assert codes == [202] * 5 + [429] * 25

    async def test_a_cancelled_job_frees_its_place(self, client, auth_a, servers: Servers):
        await _limits(servers.dsn, 1, None)
        job = (await client.post("/v1/generations", json={"prompt": "p"}, headers=auth_a)).json()
        assert (await client.post("/v1/generations", json={"prompt": "q"}, headers=auth_a)).status_code == 429
        await client.post(f"/v1/generations/{job['id']}/cancel", headers=auth_a)
        assert (await client.post("/v1/generations", json={"prompt": "q"}, headers=auth_a)).status_code == 202

    async def test_submission_rate_is_429_until_the_window_moves(self, client, auth_a, servers: Servers):
        await _limits(servers.dsn, None, 2)
        for _ in range(2):
            assert (
                await client.post("/v1/generations", json={"prompt": "p"}, headers=auth_a)
            ).status_code == 202
        _assert_limited(
            await client.post("/v1/generations", json={"prompt": "p"}, headers=auth_a), "in the last minute"
        )

    async def test_an_idempotent_retry_is_replayed_at_the_limit(self, client, auth_a, servers: Servers):
        await _limits(servers.dsn, 1, 1)
        key = {"Idempotency-Key": "order-1", **auth_a}
        first = await client.post("/v1/generations", json={"prompt": "p"}, headers=key)
        again = await client.post("/v1/generations", json={"prompt": "p"}, headers=key)
        assert first.status_code == again.status_code == 202
        assert again.headers["Idempotent-Replayed"] == "true"
        assert again.json()["id"] == first.json()["id"]

    async def test_defaults_stop_a_burst_of_two_thousand(self, client, auth_a):
        """The migration's defaults: one tenant sending 2,000 jobs in 20 s meets 429s."""
        statuses: list[int] = []
        for _ in range(2_000):
            statuses.append(
                (await client.post("/v1/generations", json={"prompt": "p"}, headers=auth_a)).status_code
            )
            if statuses[-1] == 429:
                break
        assert statuses[-1] == 429
        assert set(statuses[:-1]) == {202}
        assert len(statuses) - 1 <= 300

    def test_migrate_writes_the_settings_into_the_defaults(self, servers: Servers):
        apply_tenant_limits(
            servers.dsn, Settings(tenant_max_active_jobs=7, tenant_max_submissions_per_minute=None)
        )

        async def read() -> asyncpg.Record:
            conn = await asyncpg.connect(servers.dsn)
            try:
                row: asyncpg.Record = await conn.fetchrow(
                    "SELECT max_active_jobs, max_submissions_per_minute FROM liftoff.tenant_limits"
                    " WHERE organization_id = liftoff.default_limits_id()"
                )
                return row
            finally:
                await conn.close()

        try:
            row = asyncio.run(read())
            assert (row["max_active_jobs"], row["max_submissions_per_minute"]) == (7, None)
        finally:
            apply_tenant_limits(servers.dsn, Settings())


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (b'{"prompt": "p", "params": {"t": NaN}}', "NaN"),
        (b'{"prompt": "p", "params": {"t": Infinity}}', "Infinity"),
        (b'{"prompt": "p", "params": {"t": -Infinity}}', "Infinity"),
        (b'{"prompt": "p", "params": {"t": 1e400}}', "params"),
        (b'{"prompt": "p", "params": {"t": [1, {"u": 1e999}]}}', "params"),
        (b'{"prompt": "p", "params": {"t": "a\\u0000b"}}', "params"),
        (b'{"prompt": "p", "params": {"a\\u0000": 1}}', "params"),
        (b'{"prompt": "p", "params": {"t": "\\ud800"}}', "params"),
        (b'{"prompt": "p", "params": {"t": 1' + b"0" * 5000 + b"}}", "invalid JSON"),
        (b'{"prompt": "p", "prompt": "q"}', "duplicate key 'prompt'"),
        (b'{"prompt": "p", "params": {"t": 1, "t": 2}}', "duplicate key 't'"),
        # Thousands of keys, one repeated: found in one pass (it runs before authentication).
        (
            b'{"prompt": "p", "params": {' + b",".join(b'"k%d": 1' % i for i in range(6000)) + b', "k7": 2}}',
            "duplicate key 'k7'",
        ),
    ],
)
async def test_what_postgres_cannot_store_or_json_cannot_say_is_422(client, auth_a, raw, fragment):
    response = await client.post(
        "/v1/generations", content=raw, headers={"Content-Type": "application/json", **auth_a}
    )
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    assert fragment in error["message"]


async def test_finite_floats_and_large_integers_are_stored(client, auth_a):
    params = {"t": 0.7, "big": 10**30, "tiny": 5e-324, "max": 1.7976931348623157e308}
    response = await client.post("/v1/generations", json={"prompt": "p", "params": params}, headers=auth_a)
    assert response.status_code == 202
    stored = (await client.get(response.headers["Location"], headers=auth_a)).json()["params"]
    assert stored["big"] == 10**30 and math.isclose(stored["max"], params["max"])


@pytest.mark.parametrize(
    "query", ["limit=10&limit=20", "status=queued&status=running", "cursor=a&cursor=a", "limit=5&limit=5"]
)
async def test_repeated_query_parameters_are_422(client, auth_a, query):
    response = await client.get(f"/v1/generations?{query}", headers=auth_a)
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "repeated_parameter"


async def test_a_token_is_verified_once_and_expires_on_time(client, app, monkeypatch):
    token = make_token(lifetime=2)
    verifier = app.state.api.verifier
    decoded: list[str] = []
    original = verifier._verify

    async def counting(raw: str) -> Any:
        decoded.append(raw)
        return await original(raw)

    monkeypatch.setattr(verifier, "_verify", counting)
    for _ in range(3):
        assert (await client.get("/v1/generations", headers=bearer(token))).status_code == 200
    assert decoded == [token], "verified once, then remembered"
    await asyncio.sleep(2.2)
    # Past exp (the 30 s leeway aside) the remembered verification is not used: verified again.
    assert (await client.get("/v1/generations", headers=bearer(token))).status_code == 200
    assert decoded == [token, token]


@pytest.fixture(scope="module")
def api_process(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`python -m app api` as the image runs it, with a short request deadline."""
    port = free_port()
    env = {
        **os.environ,
        "APP_ENV": "test",
        "DATABASE_URL": servers.dsn,
        "REDIS_URL": servers.redis.url(),
        "SUPABASE_JWT_SECRET": JWT_SECRET,
        "PORT": str(port),
        "HTTP_REQUEST_TIMEOUT_SECONDS": "1.5",
        "HTTP_MAX_HEADER_BYTES": "8192",
    }
    log = (tmp_path_factory.mktemp("api") / "api.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "app", "api"], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "the API did not start"
        time.sleep(0.1)
    yield url
    process.terminate()
    process.wait(15)


def _exchange(url: str, payload: bytes, *, pause_after: float = 0.0, read_timeout: float = 10.0) -> bytes:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=read_timeout) as sock:
        sock.sendall(payload)
        if pause_after:
            time.sleep(pause_after)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


def test_oversized_headers_are_431(api_process):
    request = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n"
    response = _exchange(api_process, request)
    assert response.startswith(b"HTTP/1.1 431 ")
    assert b'"headers_too_large"' in response


def test_headers_within_the_limit_are_served(api_process):
    response = httpx.get(f"{api_process}/health", headers={"X-Some": "a" * 4000})
    assert response.status_code == 200


@pytest.mark.parametrize(
    "partial",
    [
        b"GET /health HTTP/1.1\r\nHost: x\r\n",  # headers never finished
        b"POST /v1/generations HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{",  # body trickles
        b"",  # nothing at all
    ],
    ids=["headers", "body", "silent"],
)
def test_a_client_that_does_not_finish_its_request_gets_408_in_bounded_time(api_process, partial):
    started = time.monotonic()
    response = _exchange(api_process, partial)
    elapsed = time.monotonic() - started
    assert elapsed < 5
    if partial:
        assert response.startswith(b"HTTP/1.1 408 ")
        assert b'"request_timeout"' in response
    else:
        assert response in (b"", b"HTTP/1.1 408 ") or response.startswith(b"HTTP/1.1 408 ")


def test_a_slow_but_steady_client_within_the_deadline_is_served(api_process):
    token = make_token(org=ORG_A)
    body = b'{"prompt": "slow"}'
    head = (
        f"POST /v1/generations HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    host, port = api_process.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(head)
        time.sleep(0.5)
        sock.sendall(body)
        response = sock.recv(65536)
    assert response.startswith(b"HTTP/1.1 202 ")
