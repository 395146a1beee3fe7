"""Providers: the local one, and the openai one against a local server that speaks the API."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest

from app.worker.providers import LocalProvider, OpenAIProvider, ProviderError
from tests.app.worker.conftest import submit, wait_all
from tests.conftest import Servers, fetch
from tests.http_double import Reply, Request, serve_json

JOB = uuid.UUID("12345678-1234-4678-9234-567812345678")


@dataclass
class FakeOpenAI:
    """A Chat Completions endpoint on loopback that answers from a script, then succeeds."""

    url: str
    script: list[Reply]
    requests: list[dict[str, Any]]


def completion(text: str, model: str = "gpt-4o-mini") -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8},
    }


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    script: list[Reply] = []
    seen: list[dict[str, Any]] = []

    def answer(request: Request) -> Reply:
        auth = request.headers.get("authorization")
        seen.append({"path": request.target, "auth": auth, "body": request.body})
        if not script:
            return Reply(200, completion(f"echo: {request.body['messages'][0]['content']}"))
        reply = script.pop(0)
        return reply if reply.body is not None else replace(reply, body={"error": {"message": "scripted"}})

    with serve_json(answer) as served:
        yield FakeOpenAI(f"{served.url}/v1", script, seen)


def provider(fake: FakeOpenAI, timeout: float = 5.0) -> OpenAIProvider:
    return OpenAIProvider(api_key="sk-test", base_url=fake.url, timeout=timeout)


async def call(p: OpenAIProvider, **params: Any) -> dict[str, Any]:
    try:
        return await p.generate(job_id=JOB, attempt=1, prompt="hi", model="gpt-4o-mini", params=params)
    finally:
        await p.aclose()


@pytest.mark.unit
async def test_openai_success(fake_openai: FakeOpenAI):
    result = await call(provider(fake_openai), temperature=0.2)
    assert result["text"] == "echo: hi"
    assert result["usage"]["total_tokens"] == 8
    (request,) = fake_openai.requests
    assert request["path"] == "/v1/chat/completions"
    assert request["auth"] == "Bearer sk-test"
    assert request["body"] == {
        "model": "gpt-4o-mini",
        "temperature": 0.2,
        "messages": [{"role": "user", "content": "hi"}],
    }


@pytest.mark.unit
@pytest.mark.parametrize(
    ("reply", "retryable", "retry_after"),
    [
        (Reply(429, headers={"Retry-After": "7"}), True, 7.0),
        (Reply(429), True, None),
        (Reply(500), True, None),
        (Reply(503, headers={"Retry-After": "2"}), True, 2.0),
        (Reply(400), False, None),
        (Reply(401), False, None),
        (Reply(200, body={"unexpected": True}), False, None),
    ],
)
async def test_openai_errors_are_classified(fake_openai: FakeOpenAI, reply, retryable, retry_after):
    fake_openai.script.append(reply)
    with pytest.raises(ProviderError) as caught:
        await call(provider(fake_openai))
    assert caught.value.retryable is retryable
    assert caught.value.retry_after == retry_after


@pytest.mark.unit
async def test_openai_retry_after_as_http_date(fake_openai: FakeOpenAI):
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    fake_openai.script.append(Reply(429, headers={"Retry-After": when}))
    with pytest.raises(ProviderError) as caught:
        await call(provider(fake_openai))
    assert caught.value.retry_after is not None and 25 <= caught.value.retry_after <= 30


@pytest.mark.unit
async def test_openai_timeout_is_retryable(fake_openai: FakeOpenAI):
    fake_openai.script.append(Reply(200, body=completion("late"), delay=1.0))
    with pytest.raises(ProviderError, match="timed out") as caught:
        await call(provider(fake_openai, timeout=0.2))
    assert caught.value.retryable


@pytest.mark.unit
async def test_openai_unreachable_is_retryable():
    with pytest.raises(ProviderError) as caught:
        await call(OpenAIProvider(api_key="k", base_url="http://127.0.0.1:9/v1", timeout=2))
    assert caught.value.retryable


@pytest.mark.unit
async def test_local_provider_is_deterministic():
    local = LocalProvider(failure_rate=0.5)
    outcomes = []
    for attempt in range(1, 40):
        try:
            first = await local.generate(job_id=JOB, attempt=attempt, prompt="p", model="m", params={})
            second = await local.generate(job_id=JOB, attempt=attempt, prompt="p", model="m", params={})
            assert first == second
            outcomes.append(True)
        except ProviderError as exc:
            assert exc.retryable
            with pytest.raises(ProviderError):
                await local.generate(job_id=JOB, attempt=attempt, prompt="p", model="m", params={})
            outcomes.append(False)
    assert 5 < sum(outcomes) < 35


@pytest.mark.integration
@pytest.mark.usefixtures("clean_queue")
async def test_worker_with_openai_honours_429_retry_after(
    servers: Servers, in_process, fake_openai: FakeOpenAI
):
    fake_openai.script.append(
        Reply(429, body={"error": {"message": "rate limited"}}, headers={"Retry-After": "1"})
    )
    (job_id,) = await submit(servers.dsn, servers.redis.url(), prompt="tell me", model="gpt-4o-mini")
    async with in_process(provider(fake_openai), worker_retry_base_seconds=0.01):
        await wait_all(servers.dsn, "succeeded", 1, timeout=15)
    (job,) = await fetch(servers.dsn, "SELECT result, attempts FROM generations WHERE id = $1", job_id)
    assert json.loads(job["result"])["text"] == "echo: tell me"
    assert job["attempts"] == 2
    logs = await fetch(
        servers.dsn,
        "SELECT status, provider, error, started_at FROM generation_logs"
        " WHERE generation_id = $1 ORDER BY id",
        job_id,
    )
    assert [(r["status"], r["provider"]) for r in logs] == [("retry", "openai"), ("succeeded", "openai")]
    assert "HTTP 429" in logs[0]["error"]
    assert (logs[1]["started_at"] - logs[0]["started_at"]).total_seconds() >= 1.0
