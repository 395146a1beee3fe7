"""The API's wake request to the scaler: once per interval across API instances (real Redis), sent
whatever Redis does, never raising, and with the metadata server's ID token when asked to."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from redis.asyncio import Redis

from app.core.wake import TIMEOUT_SECONDS, WAIT_SECONDS, WAKE_KEY, Waker
from app.local.servers import free_port
from app.settings import Settings
from tests.conftest import Servers
from tests.http_double import Reply, Request, Served, serve_json

pytestmark = pytest.mark.integration

METADATA_PATH = "/computeMetadata/v1/instance/service-accounts/default"
OUTCOME = {"before": 0, "instances": 1, "reason": "queue", "queued": 1, "running": 0}


def wakes(served: Served) -> list[Request]:
    return [r for r in served.requests if (r.method, r.path) == ("POST", "/wake")]


@pytest.fixture
def scaler() -> Iterator[Served]:
    """The scaler's /wake, answering as it does when it has set the count."""
    with serve_json(lambda request: Reply(200, OUTCOME)) as served:
        yield served


@pytest.fixture
async def redis_url(servers: Servers) -> AsyncIterator[str]:
    url = servers.redis.url()
    client = Redis.from_url(url)
    await client.delete(WAKE_KEY)
    yield url
    await client.delete(WAKE_KEY)
    await client.aclose()


def wake_settings(url: str, **overrides: Any) -> Settings:
    return Settings(app_env="test", worker_wake_url=url, log_format="console", **overrides)


@asynccontextmanager
async def waker(settings: Settings, redis_url: str, metadata: str | None = None) -> AsyncIterator[Waker]:
    """A Waker with clients of its own, as one API instance holds them."""
    redis = Redis.from_url(redis_url, socket_connect_timeout=1, socket_timeout=1)
    http = httpx.AsyncClient(timeout=httpx.Timeout(5.0), follow_redirects=False)
    made = Waker(settings, redis, http) if metadata is None else Waker(settings, redis, http, metadata)
    try:
        yield made
    finally:
        await made.aclose()
        await http.aclose()
        await redis.aclose()


async def test_one_wake_per_interval_across_two_api_instances(scaler: Served, redis_url: str):
    settings = wake_settings(f"{scaler.url}/wake", worker_wake_seconds=1)
    async with waker(settings, redis_url) as first, waker(settings, redis_url) as second:
        for _ in range(5):
            await first.wake()
            await second.wake()
        await first.aclose()
        await second.aclose()
        assert len(wakes(scaler)) == 1
        # Once the interval is over, the next accepted job wakes the scaler again.
        deadline = time.monotonic() + 5
        async with Redis.from_url(redis_url) as redis:
            while await redis.exists(WAKE_KEY) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
        await second.wake()
        await first.wake()
    assert len(wakes(scaler)) == 2


async def test_an_interval_of_zero_wakes_every_time(scaler: Served, redis_url: str):
    async with waker(wake_settings(f"{scaler.url}/wake", worker_wake_seconds=0), redis_url) as one:
        for _ in range(3):
            await one.wake()
    assert len(wakes(scaler)) == 3


async def test_redis_down_still_wakes(scaler: Served, capsys: pytest.CaptureFixture[str]):
    down = f"redis://127.0.0.1:{free_port()}/0"
    async with waker(wake_settings(f"{scaler.url}/wake"), down) as one:
        await one.wake()
    assert len(wakes(scaler)) == 1
    assert "wake_debounce_failed" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("scaler_is", "logged"),
    [("down", "wake_failed"), ("refusing", "wake_refused"), ("dropping", "wake_failed")],
)
async def test_a_scaler_down_or_refusing_is_logged_and_never_raises(
    scaler_is: str, logged: str, redis_url: str, capsys: pytest.CaptureFixture[str]
):
    replies = {"refusing": Reply(503, {"error": "unavailable"}), "dropping": Reply(200, drop=True)}
    with serve_json(lambda request: replies.get(scaler_is, Reply(200))) as served:
        url = f"http://127.0.0.1:{free_port()}/wake" if scaler_is == "down" else f"{served.url}/wake"
        async with waker(wake_settings(url), redis_url) as one:
            await one.wake()  # never raises
            assert not one._tasks, "nothing is left running"
    out = capsys.readouterr().out
    assert logged in out
    if scaler_is == "refusing":
        assert "503" in out


async def test_a_slow_scaler_is_waited_for_at_most_the_bound_then_given_up_on_after_the_timeout(
    redis_url: str, capsys: pytest.CaptureFixture[str]
):
    with serve_json(lambda request: Reply(200, OUTCOME, delay=TIMEOUT_SECONDS + 2)) as served:
        async with waker(wake_settings(f"{served.url}/wake"), redis_url) as one:
            started = time.monotonic()
            await one.wake()
            waited = time.monotonic() - started
            assert WAIT_SECONDS - 0.2 < waited < WAIT_SECONDS + 0.5, waited
            assert one._tasks, "the request goes on in the background"
            await one.aclose()
            took = time.monotonic() - started
    assert TIMEOUT_SECONDS - 0.5 < took < TIMEOUT_SECONDS + 1.5
    out = capsys.readouterr().out
    assert "wake_pending" in out and "wake_failed" in out


class Metadata:
    """The metadata server's identity endpoint: an ID token per audience, for `Metadata-Flavor: Google`."""

    def __init__(self, status: int = 200) -> None:
        self.status = status

    def handle(self, request: Request) -> Reply:
        if request.path != f"{METADATA_PATH}/identity":
            return Reply(404, "not found")
        if request.headers.get("metadata-flavor") != "Google":
            return Reply(403, "Missing Metadata-Flavor:Google header.")
        if self.status != 200:
            return Reply(self.status, "unavailable")
        return Reply(200, f"eyJ.id-token-for.{request.param('audience')}")


@pytest.fixture
def metadata() -> Iterator[tuple[Metadata, Served]]:
    double = Metadata()
    with serve_json(double.handle) as served:
        yield double, served


async def test_google_auth_sends_the_metadata_servers_id_token_for_the_scalers_origin(
    scaler: Served, redis_url: str, metadata: tuple[Metadata, Served]
):
    _, served = metadata
    url = f"{scaler.url}/wake"
    settings = wake_settings(url, worker_wake_auth="google")
    async with waker(settings, redis_url, f"{served.url}{METADATA_PATH}") as one:
        await one.wake()
    origin = f"{urlsplit(url).scheme}://{urlsplit(url).netloc}"
    (asked,) = served.requests
    assert asked.param("audience") == origin == scaler.url
    assert asked.headers["metadata-flavor"] == "Google"
    (wake,) = wakes(scaler)
    assert wake.headers["authorization"] == f"Bearer eyJ.id-token-for.{origin}"


async def test_the_audience_drops_the_path_and_query(redis_url: str):
    settings = wake_settings(
        "https://liftoff-prod-scaler-abc123-ew.a.run.app/wake?from=api", worker_wake_auth="google"
    )
    async with waker(settings, redis_url) as one:
        assert one.audience == "https://liftoff-prod-scaler-abc123-ew.a.run.app"


async def test_google_auth_without_a_token_sends_nothing_and_is_logged(
    scaler: Served, redis_url: str, metadata: tuple[Metadata, Served], capsys: pytest.CaptureFixture[str]
):
    double, served = metadata
    double.status = 500
    settings = wake_settings(f"{scaler.url}/wake", worker_wake_auth="google")
    async with waker(settings, redis_url, f"{served.url}{METADATA_PATH}") as one:
        await one.wake()
    assert wakes(scaler) == []
    assert "wake_failed" in capsys.readouterr().out


async def test_no_auth_sends_no_authorization(scaler: Served, redis_url: str):
    async with waker(wake_settings(f"{scaler.url}/wake"), redis_url) as one:
        await one.wake()
    (wake,) = wakes(scaler)
    assert "authorization" not in wake.headers


def test_a_waker_needs_a_url():
    with pytest.raises(ValueError, match="WORKER_WAKE_URL"):
        Waker(Settings(app_env="test"), Redis(), httpx.AsyncClient())
