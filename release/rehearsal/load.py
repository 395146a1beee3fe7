"""Real HTTP load through the router: the demo tenant listing and submitting jobs, all rehearsal long.

A request fails when it gets a 5xx or no response at all. Each outcome is kept with its start
and end time and the revision that served it, so that a report can tell the failures a
faulty revision caused from those a traffic move would have caused.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

import httpx

from release.rehearsal.router import REVISION_HEADER

DEFAULT_RATE = 60.0  # requests per second, in all
DEFAULT_CONCURRENCY = 8
# One submission in five: the rest list the tenant's jobs, as a client polling them would.
SUBMIT_EVERY = 5
TIMEOUT = httpx.Timeout(30.0, connect=5.0)
UNKNOWN = "(no response)"


@dataclass(frozen=True, slots=True)
class Outcome:
    """One request: when it ran, which revision answered, and its status (None: transport error)."""

    start: float
    end: float
    revision: str
    status: int | None

    @property
    def failed(self) -> bool:
        return self.status is None or self.status >= 500

    def overlaps(self, start: float, end: float) -> bool:
        return self.start <= end and self.end >= start


@dataclass
class LoadGenerator:
    """`concurrency` clients sending `rate` requests a second in all, paced, in their own thread."""

    url: str
    token: str
    rate: float = DEFAULT_RATE
    concurrency: int = DEFAULT_CONCURRENCY
    outcomes: list[Outcome] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> LoadGenerator:
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), name="load", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(TIMEOUT.read or 30.0)

    async def _run(self) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        limits = httpx.Limits(max_connections=self.concurrency)
        async with httpx.AsyncClient(
            base_url=self.url, headers=headers, timeout=TIMEOUT, limits=limits
        ) as http:
            await asyncio.gather(*(self._client(http, index) for index in range(self.concurrency)))

    async def _client(self, http: httpx.AsyncClient, index: int) -> None:
        interval = self.concurrency / self.rate
        # Staggered, so that the clients' requests interleave instead of arriving together.
        due = time.monotonic() + interval * index / self.concurrency
        sent = 0
        while not self._stop.is_set():
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            due += interval
            sent += 1
            await self._one(http, submit=(sent * self.concurrency + index) % SUBMIT_EVERY == 0)

    async def _one(self, http: httpx.AsyncClient, *, submit: bool) -> None:
        started = time.time()
        try:
            if submit:
                response = await http.post(
                    "/v1/generations", json={"prompt": "Write a haiku about canaries."}
                )
            else:
                response = await http.get("/v1/generations", params={"limit": 10})
        except httpx.TransportError:
            self.outcomes.append(Outcome(started, time.time(), UNKNOWN, None))
            return
        revision = response.headers.get(REVISION_HEADER, UNKNOWN)
        self.outcomes.append(Outcome(started, time.time(), revision, response.status_code))

    def wait_for(self, requests: int, timeout: float = 30.0) -> None:
        """Block until at least `requests` requests have completed (the load is flowing)."""
        deadline = time.monotonic() + timeout
        while len(self.outcomes) < requests:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"the load completed {len(self.outcomes)} of {requests} requests in {timeout}s"
                )
            time.sleep(0.05)


@dataclass(frozen=True, slots=True)
class LoadSummary:
    """Requests and failures by revision, and the failures of requests in flight during a move."""

    served: dict[str, int]
    failed: dict[str, int]
    statuses: dict[int | None, int]
    failed_during_moves: int

    @classmethod
    def of(cls, outcomes: Iterable[Outcome], moves: Iterable[tuple[float, float]]) -> LoadSummary:
        done = list(outcomes)
        spans = list(moves)
        return cls(
            served=dict(Counter(o.revision for o in done)),
            failed=dict(Counter(o.revision for o in done if o.failed)),
            statuses=dict(Counter(o.status for o in done)),
            failed_during_moves=sum(1 for o in done if o.failed and any(o.overlaps(a, b) for a, b in spans)),
        )

    @property
    def total_failed(self) -> int:
        return sum(self.failed.values())
