"""The API's wake request to the worker pool's scaler, after it accepts a job.

A hint like the Redis signal (app/core/queue.py): the job is already committed, and the
scaler's scheduled reconcile starts workers for it within a minute if this request is lost.
It only saves that minute, so it never fails the response, and is sent at most once per
WORKER_WAKE_SECONDS across every API instance (a Redis key).

It is sent before the response, not after: the API is request-billed, and Cloud Run gives an
instance CPU only while it serves a request (https://cloud.google.com/run/docs/configuring/billing-settings),
so a request left for after the 202 may not run until the instance's next request, which on a
quiet stack (the case the wake is for) may be minutes away. The first job of an interval waits
for the wake, at most WAIT_SECONDS; past them the request goes on in the background, best effort.
"""

from __future__ import annotations

import asyncio
import math
from urllib.parse import urlsplit

import httpx
import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from app.core.metadata import METADATA, MetadataError, id_token
from app.settings import Settings

log = structlog.get_logger(__name__)

WAKE_KEY = "liftoff:scaler:woken"
TIMEOUT_SECONDS = 5.0
# The longest a submission waits for its wake: a reconcile is a query and a PATCH (BENCHMARKS.md).
WAIT_SECONDS = 2.0


class Waker:
    """Asks the scaler to start workers, at most once per interval."""

    def __init__(
        self, settings: Settings, redis: Redis, http: httpx.AsyncClient, metadata: str = METADATA
    ) -> None:
        if settings.worker_wake_url is None:
            raise ValueError("WORKER_WAKE_URL is not set")
        self.url = settings.worker_wake_url
        parts = urlsplit(self.url)
        # Cloud Run accepts an ID token whose audience is the service's URL.
        self.audience = f"{parts.scheme}://{parts.netloc}"
        self.interval = settings.worker_wake_seconds
        self.auth = settings.worker_wake_auth
        self.redis = redis
        self.http = http
        self.metadata = metadata
        self._tasks: set[asyncio.Task[None]] = set()

    async def wake(self) -> None:
        """Send a wake request, waiting for it at most WAIT_SECONDS; it never raises."""
        task = asyncio.create_task(self._wake())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        try:
            # Shielded: a wait cut short (or a client that goes away) leaves the request running.
            await asyncio.wait_for(asyncio.shield(task), WAIT_SECONDS)
        except TimeoutError:
            log.info("wake_pending", waited_seconds=WAIT_SECONDS)

    async def _wake(self) -> None:
        try:
            async with asyncio.timeout(TIMEOUT_SECONDS):
                if not await self._first():
                    return
                headers = {}
                if self.auth == "google":
                    token = await id_token(self.http, self.audience, self.metadata)
                    headers["Authorization"] = f"Bearer {token}"
                response = await self.http.post(self.url, headers=headers)
            if response.status_code >= 300:
                log.warning("wake_refused", status=response.status_code, body=response.text[:200])
        except (httpx.HTTPError, MetadataError, TimeoutError) as exc:
            log.warning("wake_failed", error=repr(exc))

    async def _first(self) -> bool:
        """Whether no other wake was sent in the interval; True when Redis cannot say."""
        if self.interval <= 0:
            return True
        try:
            return bool(await self.redis.set(WAKE_KEY, "1", nx=True, ex=max(1, math.ceil(self.interval))))
        except (RedisError, OSError) as exc:
            # Redis down: wake anyway. The scaler serializes reconciles, and a count already
            # set is left alone, so a repeat costs one request.
            log.warning("wake_debounce_failed", error=repr(exc))
            return True

    async def aclose(self) -> None:
        """Let the requests under way finish (each is bounded), as at shutdown."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
