"""Where the instance count is set: a Cloud Run worker pool, or worker processes on this machine."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Mapping
from typing import Any, Protocol

import httpx
import structlog

from app.core.metadata import AccessToken, MetadataError
from app.scaler.policy import PoolState

log = structlog.get_logger(__name__)

RUN_API = "https://run.googleapis.com/v2"
# Only the instance count changes: the mask keeps every other field of the pool as it is, and
# "changing the manual instance count does not create a new revision"
# (https://cloud.google.com/run/docs/configuring/workerpools/manual-scaling). CREMA sets the
# count with the same mask (GoogleCloudPlatform/cloud-run-external-metrics-autoscaling,
# CloudRunClientWrapper.java).
COUNT_MASK = "scaling.manualInstanceCount"


class PoolError(RuntimeError):
    """The pool could not be read or resized; the message says why."""


class Pool(Protocol):
    async def read(self) -> PoolState: ...

    async def resize(self, instances: int) -> None: ...

    async def aclose(self) -> None: ...


class CloudRunPool:
    """A Cloud Run worker pool, through the Admin API v2 as the instance's own identity."""

    def __init__(
        self, name: str, http: httpx.AsyncClient, token: AccessToken | None = None, api: str = RUN_API
    ) -> None:
        self.name = name
        self.http = http
        self.token = token or AccessToken(http)
        self.url = f"{api}/{name}"

    async def read(self) -> PoolState:
        body = await self._call("GET", self.url)
        count = int(body.get("scaling", {}).get("manualInstanceCount", 0))
        split = {
            str(s.get("revision") or s.get("type", "LATEST")): int(s.get("percent", 0))
            for s in body.get("instanceSplits", [])
        }
        return PoolState(instances=count, split=split)

    async def resize(self, instances: int) -> None:
        await self._call(
            "PATCH",
            self.url,
            params={"updateMask": COUNT_MASK},
            json={"scaling": {"manualInstanceCount": instances}},
        )

    async def aclose(self) -> None:
        await self.http.aclose()

    async def _call(
        self, method: str, url: str, *, params: dict[str, str] | None = None, json: object = None
    ) -> dict[str, Any]:
        try:
            # No token from the metadata server fails the reconcile (503) as the API failing does.
            headers = {"Authorization": f"Bearer {await self.token.get()}"}
        except MetadataError as exc:
            raise PoolError(f"{method} {self.name}: no access token: {exc}") from exc
        try:
            response = await self.http.request(
                method, url, headers=headers, params=params, json=json, timeout=10.0
            )
        except httpx.HTTPError as exc:
            raise PoolError(f"{method} {self.name}: {exc!r}") from exc
        if response.status_code >= 300:
            raise PoolError(f"{method} {self.name}: {response.status_code} {response.text[:300]}")
        try:
            body = response.json()
        except ValueError as exc:
            raise PoolError(f"{method} {self.name}: the answer is not JSON: {response.text[:300]}") from exc
        return body if isinstance(body, dict) else {}


class LocalPool:
    """`python -m app worker` processes on this machine, each started after a simulated delay.

    The local stand-in for a worker pool (`make dev SCALE=on-demand`): a new count starts or
    stops processes as Cloud Run starts or stops instances, a surplus process gets SIGTERM (it
    drains and gives back what it holds, as on Cloud Run), and each start waits `start_delay`
    seconds first, Cloud Run's instance start, which a local process does not have.
    """

    def __init__(self, env: Mapping[str, str], start_delay: float = 0.0, stop_seconds: float = 15.0) -> None:
        self.env = dict(env)
        self.start_delay = start_delay
        self.stop_seconds = stop_seconds
        self.target = 0
        self.processes: list[asyncio.subprocess.Process] = []
        self._starting: list[asyncio.Task[None]] = []

    async def read(self) -> PoolState:
        # The processes alive or starting, not the last target: a worker that exits by itself (a
        # crash) is one instance fewer, and the next reconcile starts another, as Cloud Run would.
        self._prune()
        return PoolState(instances=len(self.processes) + len(self._starting), split={"local": 100})

    async def resize(self, instances: int) -> None:
        self.target = instances
        self._prune()
        surplus = len(self.processes) + len(self._starting) - instances
        while surplus > 0 and self._starting:
            self._starting.pop().cancel()
            surplus -= 1
        if surplus > 0:
            stopping, self.processes = self.processes[-surplus:], self.processes[:-surplus]
            await asyncio.gather(*(self._stop(p) for p in stopping))
        for _ in range(-surplus):
            self._starting.append(asyncio.create_task(self._start()))

    @property
    def running(self) -> int:
        return sum(1 for p in self.processes if p.returncode is None)

    def _prune(self) -> None:
        self._starting = [t for t in self._starting if not t.done()]
        self.processes = [p for p in self.processes if p.returncode is None]

    async def _start(self) -> None:
        await asyncio.sleep(self.start_delay)
        from app.local.servers import free_port

        env = {**self.env, "CLOUD_RUN_WORKER_POOL_REVISION": "local", "PORT": str(free_port())}
        spawn = asyncio.ensure_future(
            asyncio.create_subprocess_exec(sys.executable, "-m", "app", "worker", env=env)
        )
        try:
            process = await asyncio.shield(spawn)
        except asyncio.CancelledError:
            # Cancelled while the process was being spawned: it exists, so it is stopped, not left.
            await self._stop(await spawn)
            raise
        self.processes.append(process)
        log.info("worker_started", pid=process.pid, delay_seconds=self.start_delay)

    async def _stop(self, process: asyncio.subprocess.Process) -> None:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), self.stop_seconds)
        except TimeoutError:
            process.kill()
            await process.wait()
        log.info("worker_stopped", pid=process.pid, returncode=process.returncode)

    async def aclose(self) -> None:
        starting, self._starting = self._starting, []
        for task in starting:
            task.cancel()
        await asyncio.gather(*starting, return_exceptions=True)
        await asyncio.gather(*(self._stop(p) for p in self.processes))
        self.processes = []
        self.target = 0
