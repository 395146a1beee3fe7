"""The generations endpoints against real Postgres, through the whole ASGI stack."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest

from tests.conftest import ORG_A, USER_A, Servers, bearer, make_token

pytestmark = pytest.mark.integration

URL = "/v1/generations"


def assert_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message"}
    assert body["error"]["code"] == code
    assert body["error"]["message"]


async def test_create_returns_202_with_location_and_is_committed(client, auth_a, servers: Servers):
    response = await client.post(
        URL, json={"prompt": "a haiku", "params": {"temperature": 0.2}}, headers=auth_a
    )
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["status"] == "queued"
    assert job["prompt"] == "a haiku"
    assert job["model"] == "gpt-4o-mini"
    assert job["params"] == {"temperature": 0.2}
    assert response.headers["Location"] == f"{URL}/{job['id']}"
    # Committed before the 202: visible to an independent connection at once.
    conn = await asyncpg.connect(servers.dsn)
    try:
        row = await conn.fetchrow(
            "SELECT ai_status, organization_id, created_by FROM generations WHERE id = $1",
            uuid.UUID(job["id"]),
        )
    finally:
        await conn.close()
    assert row is not None
    assert (row["ai_status"], row["organization_id"], row["created_by"]) == ("queued", ORG_A, USER_A)


async def test_create_records_organization_and_membership(client, auth_a, servers: Servers):
    await client.post(URL, json={"prompt": "x"}, headers=auth_a)
    conn = await asyncpg.connect(servers.dsn)
    try:
        members = await conn.fetch("SELECT organization_id, user_id FROM organization_members")
    finally:
        await conn.close()
    assert [(m["organization_id"], m["user_id"]) for m in members] == [(ORG_A, USER_A)]


async def test_get_returns_the_job(client, auth_a):
    created = (await client.post(URL, json={"prompt": "x", "model": "gpt-4.1"}, headers=auth_a)).json()
    response = await client.get(f"{URL}/{created['id']}", headers=auth_a)
    assert response.status_code == 200
    assert response.json() == created


async def test_get_unknown_is_404(client, auth_a):
    assert_error(await client.get(f"{URL}/{uuid.uuid4()}", headers=auth_a), 404, "not_found")


async def test_get_malformed_id_is_422(client, auth_a):
    assert_error(await client.get(f"{URL}/not-a-uuid", headers=auth_a), 422, "validation_error")


async def test_another_tenant_cannot_see_or_cancel_the_job(client, auth_a, auth_b):
    job = (await client.post(URL, json={"prompt": "secret"}, headers=auth_a)).json()
    assert_error(await client.get(f"{URL}/{job['id']}", headers=auth_b), 404, "not_found")
    assert_error(await client.post(f"{URL}/{job['id']}/cancel", headers=auth_b), 404, "not_found")
    listing = await client.get(URL, headers=auth_b)
    assert listing.json() == {"items": [], "next_cursor": None}


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"prompt": "x", "extra": 1}, 422, "validation_error"),
        ({"prompt": ""}, 422, "validation_error"),
        ({}, 422, "validation_error"),
        ({"prompt": "x", "model": "bad model name"}, 422, "validation_error"),
        ({"prompt": "x", "params": []}, 422, "validation_error"),
        ({"prompt": "nul \x00 byte"}, 422, "validation_error"),
        ({"prompt": "x", "params": {"k": ["\x00"]}}, 422, "validation_error"),
        ({"prompt": "é" * (16 * 1024 + 1)}, 413, "prompt_too_large"),
    ],
)
async def test_create_rejects_bad_bodies(client, auth_a, body, status, code):
    assert_error(await client.post(URL, json=body, headers=auth_a), status, code)


async def test_prompt_of_exactly_32_kib_is_accepted(client, auth_a):
    response = await client.post(URL, json={"prompt": "a" * 32 * 1024}, headers=auth_a)
    assert response.status_code == 202


async def test_body_over_64_kib_is_413(client, auth_a):
    body = {"prompt": "x", "params": {"blob": "y" * 64 * 1024}}
    assert_error(await client.post(URL, json=body, headers=auth_a), 413, "payload_too_large")


async def test_body_over_64_kib_without_content_length_is_413(client, auth_a):
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"prompt": "x", "params": {"blob": "'
        for _ in range(70):
            yield b"y" * 1024
        yield b'"}}'

    response = await client.post(
        URL, content=chunks(), headers={**auth_a, "Content-Type": "application/json"}
    )
    assert "content-length" not in response.request.headers
    assert_error(response, 413, "payload_too_large")


async def test_malformed_json_is_422(client, auth_a):
    response = await client.post(
        URL, content=b"{not json", headers={**auth_a, "Content-Type": "application/json"}
    )
    assert_error(response, 422, "validation_error")


class TestIdempotency:
    async def test_same_key_same_body_returns_the_original(self, client, auth_a):
        headers = {**auth_a, "Idempotency-Key": "order-1"}
        first = await client.post(URL, json={"prompt": "x", "params": {"a": 1, "b": 2}}, headers=headers)
        again = await client.post(URL, json={"params": {"b": 2, "a": 1}, "prompt": "x"}, headers=headers)
        assert first.status_code == again.status_code == 202
        assert again.json() == first.json()
        assert again.headers["Idempotent-Replayed"] == "true"
        assert "Idempotent-Replayed" not in first.headers

    async def test_same_key_different_body_is_409(self, client, auth_a):
        headers = {**auth_a, "Idempotency-Key": "order-2"}
        await client.post(URL, json={"prompt": "x"}, headers=headers)
        assert_error(
            await client.post(URL, json={"prompt": "y"}, headers=headers), 409, "idempotency_conflict"
        )

    async def test_keys_are_scoped_to_the_tenant(self, client, auth_a, auth_b):
        key = {"Idempotency-Key": "shared"}
        a = (await client.post(URL, json={"prompt": "x"}, headers={**auth_a, **key})).json()
        b = (await client.post(URL, json={"prompt": "y"}, headers={**auth_b, **key})).json()
        assert a["id"] != b["id"]

    async def test_invalid_key_is_422(self, client, auth_a):
        for key in ("", "k" * 256, "has space"):
            response = await client.post(
                URL, json={"prompt": "x"}, headers={**auth_a, "Idempotency-Key": key}
            )
            assert_error(response, 422, "validation_error")

    async def test_fifty_concurrent_duplicates_create_exactly_one_job(self, client, auth_a, servers: Servers):
        headers = {**auth_a, "Idempotency-Key": "burst"}
        responses = await asyncio.gather(
            *(client.post(URL, json={"prompt": "once"}, headers=headers) for _ in range(50))
        )
        assert {r.status_code for r in responses} == {202}
        assert len({r.json()["id"] for r in responses}) == 1
        assert sum(r.headers.get("Idempotent-Replayed") is None for r in responses) == 1
        conn = await asyncpg.connect(servers.dsn)
        try:
            assert (
                await conn.fetchval("SELECT count(*) FROM generations WHERE idempotency_key = 'burst'") == 1
            )
        finally:
            await conn.close()


class TestList:
    async def test_pages_newest_first_by_cursor(self, client, auth_a):
        ids = []
        for i in range(7):
            ids.append((await client.post(URL, json={"prompt": f"p{i}"}, headers=auth_a)).json()["id"])
        seen: list[str] = []
        cursor = None
        pages = 0
        while True:
            params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
            page = (await client.get(URL, params=params, headers=auth_a)).json()
            seen += [item["id"] for item in page["items"]]
            pages += 1
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert pages == 3
        assert seen == list(reversed(ids))

    async def test_filters_by_status(self, client, auth_a):
        keep = (await client.post(URL, json={"prompt": "a"}, headers=auth_a)).json()
        gone = (await client.post(URL, json={"prompt": "b"}, headers=auth_a)).json()
        await client.post(f"{URL}/{gone['id']}/cancel", headers=auth_a)
        queued = (await client.get(URL, params={"status": "queued"}, headers=auth_a)).json()
        cancelled = (await client.get(URL, params={"status": "cancelled"}, headers=auth_a)).json()
        assert [i["id"] for i in queued["items"]] == [keep["id"]]
        assert [i["id"] for i in cancelled["items"]] == [gone["id"]]

    @pytest.mark.parametrize(
        ("params", "code"),
        [
            ({"limit": 101}, "validation_error"),
            ({"limit": 0}, "validation_error"),
            ({"status": "exploded"}, "validation_error"),
            ({"cursor": "not-a-cursor"}, "invalid_cursor"),
            ({"cursor": "WyIyMDI2LTAxLTAxIiwgIngiXQ"}, "invalid_cursor"),
        ],
    )
    async def test_rejects_bad_parameters(self, client, auth_a, params, code):
        assert_error(await client.get(URL, params=params, headers=auth_a), 422, code)

    async def test_limit_of_100_is_allowed(self, client, auth_a):
        response = await client.get(URL, params={"limit": 100}, headers=auth_a)
        assert response.status_code == 200


class TestCancel:
    async def test_cancels_a_queued_job(self, client, auth_a):
        job = (await client.post(URL, json={"prompt": "x"}, headers=auth_a)).json()
        response = await client.post(f"{URL}/{job['id']}/cancel", headers=auth_a)
        assert response.status_code == 200
        assert response.json()["status"] == "cancelled"
        assert response.json()["finished_at"] is not None
        again = await client.post(f"{URL}/{job['id']}/cancel", headers=auth_a)
        assert again.status_code == 200

    async def test_asks_a_running_job_to_stop(self, client, auth_a, servers: Servers):
        job = (await client.post(URL, json={"prompt": "x"}, headers=auth_a)).json()
        await _set_status(servers.dsn, job["id"], "running")
        response = await client.post(f"{URL}/{job['id']}/cancel", headers=auth_a)
        assert response.status_code == 202
        assert response.json()["status"] == "running"
        assert response.json()["cancel_requested"] is True

    async def test_finished_job_is_409(self, client, auth_a, servers: Servers):
        job = (await client.post(URL, json={"prompt": "x"}, headers=auth_a)).json()
        await _set_status(servers.dsn, job["id"], "succeeded")
        assert_error(await client.post(f"{URL}/{job['id']}/cancel", headers=auth_a), 409, "not_cancellable")

    async def test_unknown_job_is_404(self, client, auth_a):
        assert_error(await client.post(f"{URL}/{uuid.uuid4()}/cancel", headers=auth_a), 404, "not_found")


async def test_token_without_organization_is_403(client):
    response = await client.get(URL, headers=bearer(make_token(org=None)))
    assert_error(response, 403, "no_organization")


async def _set_status(dsn: str, job_id: str, status: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("UPDATE generations SET ai_status = $1 WHERE id = $2", status, uuid.UUID(job_id))
    finally:
        await conn.close()
