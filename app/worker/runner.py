"""The worker process: claims jobs from Postgres, wakes on Redis hints, drains on SIGTERM.

Design (see app/worker/README.md): Postgres is the queue and the source of truth. A claim is
`FOR UPDATE SKIP LOCKED` under a lease that heartbeats extend; a worker that dies stops
heartbeating, its lease runs out, and a sweep gives the job to another worker. Redis carries
only wake-up hints: one LPUSH per job from the API, one long BRPOP here. While idle the worker
sends one Redis command per WORKER_WAIT_SECONDS; everything periodic goes to Postgres.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import HTTPServer
from typing import Any, Literal, NamedTuple
from uuid import UUID, uuid4

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine
from structlog.typing import FilteringBoundLogger

from app.core.db import engine_for
from app.core.probes import is_probe
from app.core.queue import QUEUE_KEY, signal_ready
from app.settings import Settings
from app.worker import store
from app.worker.jobs import JobContext, generate
from app.worker.metrics import WorkerMetrics, serve
from app.worker.providers import LocalProvider, Provider, ProviderError, make_provider
from app.worker.store import ClaimedJob, Outcome

log = structlog.get_logger(__name__)

StopReason = Literal["cancel", "shutdown", "lost"]
# Errors of the database or its connection: a loop that meets one waits and tries again.
DB_ERRORS = (SQLAlchemyError, OSError, TimeoutError)
REDIS_ERRORS = (RedisError, OSError, TimeoutError)
MAX_RETRY_AFTER_SECONDS = 86_400.0
QUEUE_STATS_LOG_SECONDS = 60.0


@dataclass
class RunningJob:
    """A job this process is running, and why it was told to stop, if it was."""

    job: ClaimedJob
    task: asyncio.Task[None] | None = None
    stop_reason: StopReason | None = None
    started: float = field(default_factory=time.monotonic)
    # Once the outcome is being written, nothing may interrupt it.
    finishing: bool = False

    def stop(self, reason: StopReason) -> None:
        if self.finishing or self.stop_reason is not None:
            return
        if self.task is not None and not self.task.done():
            self.stop_reason = reason
            self.task.cancel()


class _Backoff:
    """Exponential delays with jitter for loops that wait out an outage."""

    def __init__(self, first: float = 0.2, cap: float = 10.0) -> None:
        self.first, self.cap, self.current = first, cap, first

    def next(self) -> float:
        delay = self.current
        self.current = min(self.cap, self.current * 2)
        return delay * random.uniform(0.5, 1.0)  # noqa: S311

    def reset(self) -> None:
        self.current = self.first


@dataclass(frozen=True, slots=True)
class Failure:
    """What a failed attempt's exception says about the next attempt."""

    retryable: bool
    retry_after: float | None = None
    # Not a ProviderError: a bug or an unforeseen condition, logged with its traceback.
    crashed: bool = False


def classify(exc: Exception) -> Failure:
    """A provider's error says itself whether to retry, and when. Anything else is retried:
    most unknown failures are transient, and the attempt cap bounds the rest."""
    if isinstance(exc, ProviderError):
        return Failure(retryable=exc.retryable, retry_after=exc.retry_after)
    return Failure(retryable=True, crashed=True)


def retry_delay(attempt: int, base: float, cap: float, retry_after: float | None = None) -> float:
    """Seconds before the next attempt: the provider's Retry-After if it gave one, else
    exponential backoff with equal jitter (half fixed, half random)."""
    if retry_after is not None:
        return min(max(retry_after, 0.0), MAX_RETRY_AFTER_SECONDS)
    ceiling: float = min(cap, base * 2.0 ** (attempt - 1))
    return ceiling / 2 + random.uniform(0, ceiling / 2)  # noqa: S311


@dataclass(frozen=True, slots=True)
class Ending:
    """How an attempt ended, before it is written. No outcome: the lease was lost, and the
    attempt belongs to whoever recovers it."""

    outcome: Outcome | None
    result: Any = None
    error: str | None = None
    retry_in: float = 0.0


# The outcome of an attempt its worker stopped, by the reason it was stopped.
_STOPPED: dict[StopReason, Ending] = {
    "cancel": Ending(Outcome.CANCELLED, error="cancelled by request"),
    "shutdown": Ending(Outcome.RELEASED),
    "lost": Ending(None),
}


@dataclass(frozen=True, slots=True)
class _Pending:
    """An outcome waiting for its group write, and when waiting stops making sense."""

    entry: store.Finish
    deadline: float
    written: asyncio.Future[bool]


class FinishWriter:
    """Writes finished attempts in batches: whatever ended while the last write was in flight
    goes in the next statement, so a busy worker spends one round trip on many jobs."""

    BATCH = 500

    def __init__(self, db: AsyncEngine, *, worker: str, provider: str, revision: str) -> None:
        self.db, self.worker, self.provider, self.revision = db, worker, provider, revision
        self._pending: list[_Pending] = []
        self._ready = asyncio.Event()

    async def write(self, entry: store.Finish, deadline: float) -> bool:
        """Queue `entry` for the next group write; True once written, False if the lease was
        lost or the database stayed out of reach until `deadline`."""
        written: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(entry, deadline, written))
        self._ready.set()
        return await written

    async def run(self) -> None:
        backoff = _Backoff(first=0.1, cap=2.0)
        while True:
            batch = await self._next_batch()
            if not batch:
                continue
            try:
                async with self.db.begin() as conn:
                    written = await store.finish(
                        conn,
                        [p.entry for p in batch],
                        worker=self.worker,
                        provider=self.provider,
                        revision=self.revision,
                    )
            except DB_ERRORS as exc:
                await self._retry_later(batch, exc, backoff.next())
                continue
            backoff.reset()
            for pending in batch:
                if not pending.written.done():
                    pending.written.set_result(pending.entry.job.id in written)

    async def _next_batch(self) -> list[_Pending]:
        await self._ready.wait()
        self._ready.clear()
        batch, self._pending = self._pending[: self.BATCH], self._pending[self.BATCH :]
        if self._pending:
            self._ready.set()
        return batch

    async def _retry_later(self, batch: list[_Pending], exc: Exception, delay: float) -> None:
        """Through a database outage, keep each outcome for as long as its deadline allows."""
        now = time.monotonic()
        keep = []
        for pending in batch:
            if now + delay > pending.deadline:
                # The lease will run out and another worker will run the job again.
                log.error("finish_abandoned", job_id=str(pending.entry.job.id), error=repr(exc))
                pending.written.set_result(False)
            else:
                keep.append(pending)
        if keep:
            log.warning("finish_retrying", jobs=len(keep), error=repr(exc))
            await asyncio.sleep(delay)
            self._pending[:0] = keep
            self._ready.set()


class Background(NamedTuple):
    """The worker's loops. Draining stops them in two waves: intake first, upkeep last."""

    fetch: asyncio.Task[None]
    sweep: asyncio.Task[None]
    heartbeat: asyncio.Task[None]
    tick: asyncio.Task[None]
    finish: asyncio.Task[None]

    @property
    def intake(self) -> tuple[asyncio.Task[None], ...]:
        """The loops that take new work."""
        return (self.fetch, self.sweep)

    @property
    def upkeep(self) -> tuple[asyncio.Task[None], ...]:
        """The loops the running jobs still need: leases, metrics, outcome writes."""
        return (self.heartbeat, self.tick, self.finish)


class Worker:
    """One worker process: N concurrent jobs on one event loop."""

    def __init__(
        self, settings: Settings, *, provider: Provider | None = None, worker_id: str | None = None
    ) -> None:
        self.settings = settings
        self.id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid4().hex[:6]}"
        self.concurrency = settings.worker_concurrency
        self.lease = settings.worker_lease_seconds
        # Every running job may finish at once, beside the sweep and the heartbeat.
        self.engine = engine_for(
            settings, application_name="liftoff-worker", min_pool_size=self.concurrency + 2
        )
        # Every statement here is atomic on its own. On a direct connection each runs in
        # autocommit: no BEGIN and COMMIT round trips around it (`begin()` then sends none).
        # Behind a transaction pooler each gets a transaction of its own, so that the driver's
        # round trips for it reach one server connection (see app/core/db.py).
        self.db = (
            self.engine
            if settings.transaction_pooler()
            else self.engine.execution_options(isolation_level="AUTOCOMMIT")
        )
        self.redis = Redis.from_url(
            settings.secret("redis_url"),
            socket_connect_timeout=5,
            # The blocking read must be allowed to outlast its own timeout.
            socket_timeout=settings.worker_wait_seconds + 15,
            # No background PINGs or client metadata: on Upstash every command is billed.
            health_check_interval=0,
            driver_info=None,
        )
        self.provider = provider or make_provider(settings)
        # Release probes run offline whatever AI_PROVIDER says: a canary's traffic costs nothing.
        self.probe_provider: Provider = LocalProvider()
        # The Cloud Run revision this process runs as, on every attempt it writes and logs.
        self.revision = settings.cloud_run_worker_pool_revision
        self.metrics = WorkerMetrics()
        self.running: dict[UUID, RunningJob] = {}
        # Jobs done running whose outcome is being written: no slot, but their lease is still held.
        self._writing: dict[UUID, RunningJob] = {}
        self._claim_lock = asyncio.Lock()
        self._slot_free = asyncio.Event()
        self._slot_free.set()
        self._poke = asyncio.Event()
        self._stopping = asyncio.Event()
        self._shutdown_deadline: float | None = None
        self._stats_logged = float("-inf")
        self.released: list[UUID] = []
        self._writer = FinishWriter(
            self.db, worker=self.id, provider=self.provider.name, revision=self.revision
        )

    # -- lifecycle ---------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop fetching and drain (what SIGTERM does)."""
        if not self._stopping.is_set():
            log.info("worker_stopping", running=len(self.running))
            self._stopping.set()

    async def run(self, *, install_signals: bool = True, serve_http: bool = True) -> None:
        if install_signals:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.stop)
        server = self._serve_metrics() if serve_http else None
        log.info(
            "worker_started",
            worker=self.id,
            revision=self.revision,
            concurrency=self.concurrency,
            provider=self.provider.name,
            port=self.settings.port if serve_http else None,
        )
        background = Background(
            fetch=asyncio.create_task(self._fetch_loop(), name="fetch"),
            sweep=asyncio.create_task(self._sweep_loop(), name="sweep"),
            heartbeat=asyncio.create_task(self._heartbeat_loop(), name="heartbeat"),
            tick=asyncio.create_task(self._tick_loop(), name="tick"),
            finish=asyncio.create_task(self._writer.run(), name="finish"),
        )
        try:
            await self._stopping.wait()
        finally:
            await self._drain(background)
            await self._close(server)
            log.info("worker_stopped", worker=self.id, released=len(self.released))

    def _serve_metrics(self) -> HTTPServer:
        server = serve(self.metrics, self.settings.host, self.settings.port)
        threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True).start()
        return server

    async def _close(self, server: HTTPServer | None) -> None:
        if server is not None:
            server.shutdown()
            server.server_close()
        await self.provider.aclose()
        await self.redis.aclose()
        await self.engine.dispose()

    async def _drain(self, background: Background) -> None:
        self._shutdown_deadline = time.monotonic() + self.settings.worker_shutdown_grace_seconds
        for task in background.intake:
            task.cancel()
        await self._let_jobs_finish()
        for task in background.upkeep:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        if self.released:
            # Wake another worker at once for what this one gave back.
            try:
                await asyncio.wait_for(signal_ready(self.redis, self.released), timeout=1.0)
            except TimeoutError:
                log.warning("release_signal_timed_out", jobs=len(self.released))

    async def _let_jobs_finish(self) -> None:
        """Give running jobs the grace period, then stop the rest, which release their jobs."""
        jobs = [rj.task for rj in (*self.running.values(), *self._writing.values()) if rj.task is not None]
        if not jobs:
            return
        _, pending = await asyncio.wait(jobs, timeout=self.settings.worker_shutdown_grace_seconds)
        for rj in list(self.running.values()):
            rj.stop("shutdown")
        # Releases are single statements; give them a moment, not the full lease.
        if pending:
            await asyncio.wait(pending, timeout=1.5)

    # -- claiming ----------------------------------------------------------------------------

    async def _claim(self) -> list[ClaimedJob]:
        async with self._claim_lock:
            free = self.concurrency - len(self.running)
            if free <= 0 or self._stopping.is_set() or self._write_backlog():
                return []
            async with self.db.begin() as conn:
                jobs = await store.claim(
                    conn, worker=self.id, limit=free, lease_seconds=self.lease, revision=self.revision
                )
            for job in jobs:
                self._start(job)
            return jobs

    async def _fetch_loop(self) -> None:
        backoff = _Backoff()
        while not self._stopping.is_set():
            await self._slot_free.wait()
            try:
                if await self._claim():
                    backoff.reset()
                    continue
            except DB_ERRORS as exc:
                log.warning("claim_failed", error=repr(exc))
                await asyncio.sleep(backoff.next())
                continue
            try:
                # Nothing ready: sleep on Redis until the API signals a job, or the timeout.
                await self.redis.brpop([QUEUE_KEY], timeout=self.settings.worker_wait_seconds)
                backoff.reset()
            except REDIS_ERRORS as exc:
                # Jobs still run meanwhile: the sweep finds them in Postgres.
                log.warning("queue_wait_failed", error=repr(exc))
                await asyncio.sleep(backoff.next())

    async def _sweep_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                requeued = await self._recover_expired()
                await self._claim()
                await self._wake(requeued)
                await self._gauge_queue()
            except DB_ERRORS as exc:
                log.warning("sweep_failed", error=repr(exc))
            try:
                await asyncio.wait_for(self._poke.wait(), timeout=self.settings.worker_sweep_seconds)
            except TimeoutError:
                pass
            self._poke.clear()

    async def _recover_expired(self) -> list[UUID]:
        """Take back the jobs of workers whose leases ran out; the ids of those queued again."""
        async with self.db.begin() as conn:
            recovered = await store.recover_expired(
                conn, max_attempts=self.settings.worker_max_attempts, provider=self.provider.name
            )
        for job_id, status in recovered:
            self.metrics.recovered.inc()
            if status == "failed":
                self.metrics.dead_lettered.inc()
            log.warning("lease_recovered", job_id=str(job_id), status=status)
        return [job_id for job_id, status in recovered if status == "queued"]

    async def _gauge_queue(self) -> None:
        async with self.db.begin() as conn:
            depth, oldest = await store.queue_stats(conn)
        self.metrics.queue_depth.set(depth)
        self.metrics.oldest_age.set(oldest)
        if time.monotonic() - self._stats_logged >= QUEUE_STATS_LOG_SECONDS:
            # The cloud's queue-age alert reads these lines (a log-based metric).
            log.info("queue_stats", depth=depth, oldest_age_seconds=round(oldest, 1))
            self._stats_logged = time.monotonic()

    async def _wake(self, job_ids: list[UUID]) -> None:
        """Signal jobs handed back to the queue, as the API does for new ones: idle workers,
        this one's fetch loop included, are parked in BRPOP and would otherwise wait for their
        next sweep to see them, a few at a time."""
        if not job_ids:
            return
        try:
            await asyncio.wait_for(signal_ready(self.redis, job_ids), timeout=1.0)
        except TimeoutError:
            log.warning("recovery_signal_timed_out", jobs=len(job_ids))

    async def _heartbeat_loop(self) -> None:
        interval = min(self.lease / 3, 2.0)
        while True:
            await asyncio.sleep(interval)
            held = [job_id for job_id, rj in self.running.items() if rj.stop_reason is None]
            held += list(self._writing)
            if not held:
                continue
            try:
                async with self.db.begin() as conn:
                    leases = await store.heartbeat(
                        conn, worker=self.id, job_ids=held, lease_seconds=self.lease
                    )
            except DB_ERRORS as exc:
                log.warning("heartbeat_failed", jobs=len(held), error=repr(exc))
                continue
            for job_id in held:
                rj = self.running.get(job_id)
                if rj is None:  # done running: a stop would come too late
                    continue
                if job_id not in leases:
                    log.warning("lease_lost", job_id=str(job_id))
                    rj.stop("lost")
                elif leases[job_id]:
                    log.info("cancel_requested", job_id=str(job_id))
                    rj.stop("cancel")

    async def _tick_loop(self) -> None:
        while True:
            self.metrics.tick()
            await asyncio.sleep(5)

    # -- running -----------------------------------------------------------------------------

    def _start(self, job: ClaimedJob) -> None:
        running = RunningJob(job)
        self.running[job.id] = running
        running.task = asyncio.create_task(self._run(running), name=f"job-{job.id}")
        self.metrics.running.set(len(self.running))
        if len(self.running) >= self.concurrency:
            self._slot_free.clear()

    async def _run(self, rj: RunningJob) -> None:
        job = rj.job
        probe = is_probe(job.organization_id)
        bound = log.bind(job_id=str(job.id), attempt=job.attempt, revision=self.revision, probe=probe)
        bound.debug("job_started")
        try:
            ending = await self._attempt(rj, bound)
        except asyncio.CancelledError:
            # Not a stop of ours (the event loop is closing): there is nothing to write.
            self.running.pop(job.id, None)
            self._free_slot()
            raise
        elapsed = time.monotonic() - rj.started
        self._hand_over(rj)
        try:
            await self._record(job, ending, elapsed, bound)
        finally:
            self._writing.pop(job.id, None)
            self._free_slot()

    async def _attempt(self, rj: RunningJob, bound: FilteringBoundLogger) -> Ending:
        """Run the job once; how it ended."""
        job = rj.job
        try:
            await self._fault(job)
            ctx = JobContext(job_id=job.id, attempt=job.attempt, provider=self._provider_for(job))
            result = await generate(ctx, prompt=job.prompt, model=job.model, params=job.params)
        except asyncio.CancelledError:
            if rj.stop_reason is None:
                raise
            return _STOPPED[rj.stop_reason]
        except Exception as exc:
            failure = classify(exc)
            if failure.crashed:
                bound.exception("job_crashed")
            return self._failed(job, exc, failure)
        return Ending(Outcome.SUCCEEDED, result=result)

    def _provider_for(self, job: ClaimedJob) -> Provider:
        return self.probe_provider if is_probe(job.organization_id) else self.provider

    async def _fault(self, job: ClaimedJob) -> None:
        """FAULT_JOB_DELAY_MS and FAULT_JOB_ERROR_RATIO (rehearsals only, Settings refuses them
        elsewhere): a faulty worker revision, probes included, as a bug in the worker would be."""
        if self.settings.fault_job_delay_ms:
            await asyncio.sleep(self.settings.fault_job_delay_ms / 1000)
        ratio = self.settings.fault_job_error_ratio
        if ratio and _roll(job) < ratio:
            raise ProviderError("FAULT_JOB_ERROR_RATIO: simulated worker fault", retryable=True)

    def _failed(self, job: ClaimedJob, exc: Exception, failure: Failure) -> Ending:
        """Retry later while attempts remain and another may succeed; else the job has failed."""
        if not is_probe(job.organization_id):
            self.metrics.failed.labels(retryable=str(failure.retryable).lower()).inc()
        error = str(exc) or type(exc).__name__
        if not failure.retryable or job.attempt >= self.settings.worker_max_attempts:
            return Ending(Outcome.FAILED, error=error)
        retry_in = retry_delay(
            job.attempt,
            self.settings.worker_retry_base_seconds,
            self.settings.worker_retry_max_seconds,
            failure.retry_after,
        )
        return Ending(Outcome.RETRY, error=error, retry_in=retry_in)

    def _hand_over(self, rj: RunningJob) -> None:
        """No longer running: the slot is free while the outcome is written, so the next claim
        overlaps this write. The lease stays held (and heartbeated) until the write lands."""
        rj.finishing = True
        self.running.pop(rj.job.id, None)
        self._writing[rj.job.id] = rj
        self._free_slot()

    async def _record(
        self, job: ClaimedJob, ending: Ending, elapsed: float, bound: FilteringBoundLogger
    ) -> None:
        if ending.outcome is None:
            bound.warning("job_abandoned", reason="lease lost")
            return
        entry = store.Finish(
            job,
            ending.outcome,
            result=ending.result,
            error=ending.error,
            retry_in=ending.retry_in,
            provider=self._provider_for(job).name,
        )
        written = await self._writer.write(entry, self._write_deadline())
        if written:
            self._count(ending.outcome, job, ending.retry_in, elapsed)
        bound.info("job_finished", outcome=ending.outcome.value, written=written, seconds=round(elapsed, 3))

    def _write_deadline(self) -> float:
        # Through a database outage, retry for as long as the lease could last (less, at shutdown).
        deadline = time.monotonic() + self.lease
        if self._shutdown_deadline is not None:
            deadline = min(deadline, self._shutdown_deadline + 1.5)
        return deadline

    def _write_backlog(self) -> bool:
        # Outcomes waiting for the database hold back new claims: a slow database slows intake.
        return len(self._writing) >= 4 * self.concurrency

    def _free_slot(self) -> None:
        self.metrics.running.set(len(self.running))
        if len(self.running) < self.concurrency and not self._write_backlog():
            self._slot_free.set()

    def _count(self, outcome: Outcome, job: ClaimedJob, retry_in: float, elapsed: float) -> None:
        if outcome is Outcome.RETRY:
            # This worker will likely be the one to run it again: look as soon as it is due.
            asyncio.get_running_loop().call_later(retry_in, self._poke.set)
        elif outcome is Outcome.RELEASED:
            self.released.append(job.id)
        if is_probe(job.organization_id):
            # A release's probes have a counter of their own: the tenants' figures stay theirs.
            self.metrics.probe_attempts.labels(outcome=outcome.value).inc()
            return
        self.metrics.duration.labels(outcome=outcome.value).observe(elapsed)
        counter = {
            Outcome.SUCCEEDED: self.metrics.processed,
            Outcome.RETRY: self.metrics.retried,
            Outcome.FAILED: self.metrics.dead_lettered,
            Outcome.CANCELLED: self.metrics.cancelled,
            Outcome.RELEASED: self.metrics.released,
        }[outcome]
        counter.inc()


def _roll(job: ClaimedJob) -> float:
    """A number in [0, 1) fixed by (job, attempt): which attempts a fault fails is reproducible."""
    digest = hashlib.sha256(f"fault:{job.id}:{job.attempt}".encode()).digest()
    return int.from_bytes(digest[:8]) / 2**64


def run_worker(settings: Settings) -> None:
    """Run a worker until SIGTERM or SIGINT, on uvloop where it is installed."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvicorn[standard] brings it on Linux and macOS
        asyncio.run(Worker(settings).run())
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(Worker(settings).run())
