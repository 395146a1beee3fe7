"""A weighted HTTP router on loopback: the rehearsal's stand-in for Cloud Run's traffic split.

Each request goes to one revision by the current weights, chosen when it arrives, and finishes
there: a move of the weights changes where the next requests go, never a request in flight.
Every response says which revision served it in `X-Liftoff-Revision`.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

import httpx
import uvicorn
from starlette.types import Receive, Scope, Send

from app.local.servers import LOOPBACK, free_port

REVISION_HEADER = "x-liftoff-revision"
# Connection-level headers a proxy must not forward (RFC 9110, section 7.6.1), and the length,
# which the proxy sets itself for the body it sends on.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"content-length",
        b"host",
    }
)
UPSTREAM_TIMEOUT = httpx.Timeout(30.0, connect=5.0)
START_SECONDS = 10.0
# Google's front end keeps an idle client connection about 600 s
# (https://cloud.google.com/load-balancing/docs/https#timeouts_and_retries), far longer than any
# client's keep-alive, so the client always closes first. Uvicorn's default of 5 s races httpx's
# own 5 s expiry: the router would close a connection the load is just reusing.
KEEP_ALIVE_SECONDS = 620


class RouterError(ValueError):
    """Weights the router cannot apply."""


@dataclass(frozen=True, slots=True)
class Weights:
    """One traffic split: percent by revision name (0 % entries stay known to the router)."""

    percent: Mapping[str, int]

    @classmethod
    def of(cls, percent: Mapping[str, int]) -> Weights:
        if sum(percent.values()) != 100 or any(p < 0 for p in percent.values()):
            raise RouterError(f"weights must be whole percents adding up to 100, got {dict(percent)}")
        return cls(MappingProxyType(dict(percent)))


class SmoothWeighted:
    """nginx's smooth weighted round-robin: exact shares, evenly interleaved.

    Each pick adds every revision's weight to its running score, takes the highest score and
    subtracts the total from it (https://github.com/phusion/nginx/commit/27e94984486058d73157038f7950a0a36ecc6e35).
    Over any 100 picks each revision gets its percent, give or take one.
    """

    def __init__(self, weights: Weights) -> None:
        self.weights = weights
        self._score = dict.fromkeys(weights.percent, 0)

    def pick(self) -> str:
        total = 0
        for name, weight in self.weights.percent.items():
            self._score[name] += weight
            total += weight
        chosen = max(self._score, key=lambda name: self._score[name])
        self._score[chosen] -= total
        return chosen


class WeightedRouter:
    """A reverse proxy in its own thread and event loop; `set_weights` may be called from any thread."""

    def __init__(self) -> None:
        self.port = free_port()
        self._upstreams: dict[str, str] = {}
        self._weights: Weights | None = None
        # Held while a request picks its revision and is counted, and while the weights move:
        # once set_weights returns, every request routed by the old split is counted in flight.
        self._lock = threading.Lock()
        self._picker: SmoothWeighted | None = None
        self._in_flight: dict[str, int] = {}
        self._served: dict[str, int] = {}
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._client: httpx.AsyncClient | None = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def add(self, revision: str, url: str) -> None:
        """Make a revision routable (at 0 % until the weights name it)."""
        self._upstreams = {**self._upstreams, revision: url}

    def weights(self) -> dict[str, int]:
        current = self._weights
        return dict(current.percent) if current is not None else {}

    def set_weights(self, percent: Mapping[str, int]) -> None:
        """Move the traffic: one reference swap, so a request sees the old split or the new one."""
        unknown = sorted(set(percent) - set(self._upstreams))
        if unknown:
            raise RouterError(f"no such revision behind the router: {unknown}")
        weights = Weights.of(percent)
        with self._lock:
            self._weights = weights

    def in_flight(self, revision: str) -> int:
        return self._in_flight.get(revision, 0)

    def served(self) -> dict[str, int]:
        return dict(self._served)

    def drain(self, revisions: set[str], timeout: float) -> float:
        """Wait until no request is in flight on `revisions`; the seconds it took."""
        started = time.perf_counter()
        while any(self.in_flight(name) for name in revisions) and time.perf_counter() - started < timeout:
            time.sleep(0.001)
        return time.perf_counter() - started

    def _choose(self) -> str:
        weights = self._weights
        if weights is None:
            raise RouterError("the router has no weights yet")
        if self._picker is None or self._picker.weights is not weights:
            self._picker = SmoothWeighted(weights)
        return self._picker.pick()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        with self._lock:
            revision = self._choose()
            self._in_flight[revision] = self._in_flight.get(revision, 0) + 1
        try:
            status, headers, body = await self._forward(revision, scope, receive)
        finally:
            self._in_flight[revision] -= 1
        self._served[revision] = self._served.get(revision, 0) + 1
        headers += [
            (REVISION_HEADER.encode(), revision.encode()),
            (b"content-length", str(len(body)).encode()),
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _forward(
        self, revision: str, scope: Scope, receive: Receive
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        query = scope.get("query_string", b"").decode("latin-1")
        url = self._upstreams[revision] + scope["raw_path"].decode("latin-1") + (f"?{query}" if query else "")
        headers = [(k, v) for k, v in scope["headers"] if k.lower() not in HOP_BY_HOP]
        if self._client is None:
            raise RouterError("the router is not started")
        try:
            response = await self._client.request(scope["method"], url, headers=headers, content=body)
        except httpx.TransportError as exc:
            error = {"error": {"code": "bad_gateway", "message": f"{type(exc).__name__} from {revision}"}}
            return 502, [(b"content-type", b"application/json")], json.dumps(error).encode()
        kept = [(k, v) for k, v in response.headers.raw if k.lower() not in HOP_BY_HOP]
        return response.status_code, kept, response.content

    def start(self) -> WeightedRouter:
        ready = threading.Event()
        self._thread = threading.Thread(
            target=lambda: asyncio.run(self._serve(ready)), name="router", daemon=True
        )
        self._thread.start()
        if not ready.wait(START_SECONDS):
            raise RuntimeError(f"the router did not start on port {self.port}")
        return self

    async def _serve(self, ready: threading.Event) -> None:
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=100)
        async with httpx.AsyncClient(timeout=UPSTREAM_TIMEOUT, limits=limits) as client:
            self._client = client
            config = uvicorn.Config(
                self,
                host=LOOPBACK,
                port=self.port,
                lifespan="off",
                log_level="warning",
                access_log=False,
                timeout_keep_alive=KEEP_ALIVE_SECONDS,
            )
            self._server = uvicorn.Server(config)
            task = asyncio.create_task(self._server.serve())
            while not self._server.started and not task.done():
                await asyncio.sleep(0.01)
            ready.set()
            await task

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(START_SECONDS)
