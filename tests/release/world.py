"""An in-memory Cloud Run for the controller's unit tests, holding the rules a plan must meet.

Traffic may only go to revisions that exist, percents must sum to 100 and tags be unique
(components.traffic.validate, the rules Cloud Run enforces); "latest" is the revision created
last. Every state the traffic passes through is kept, so a test can prove that a revision never
served. The sequence tests (tests/stacks/test_release_sequences.py) run the real program instead.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from components.traffic import TrafficTarget, validate
from release.controller import Controller
from release.gates import JobWindow, Window
from release.ports import (
    Approver,
    Clock,
    Deployer,
    DeployError,
    JobMetrics,
    Live,
    LiveReader,
    Metrics,
    Smoke,
    Synthetic,
)
from stacks.ledger import Ledger, Release
from stacks.release_plan import ReleasePlan
from stacks.settings.release import ReleaseSettings

API = "liftoff-prod-api"
WORKER = "liftoff-prod-worker"


class Ports(LiveReader, Deployer, Metrics, JobMetrics, Smoke, Synthetic, Clock, Protocol):
    """A double that plays every port of the controller but the approvals."""


def controller_over(world: Ports, settings: ReleaseSettings, approver: Approver, **ports: Any) -> Controller:
    """The real controller over a double of the cloud, printing nothing; `ports` replaces some
    (`synthetic=None`, a `schema` gate) or adds the `source` commit."""
    every: dict[str, Any] = {
        "live": world,
        "deployer": world,
        "metrics": world,
        "jobs": world,
        "smoke": world,
        "synthetic": world,
        "clock": world,
        "out": lambda line: None,
    }
    return Controller(settings=settings, approver=approver, **(every | ports))


@dataclass(frozen=True)
class Probes:
    """Probes a synthetic send made: over which span, to which candidate, how many a second."""

    start: float
    end: float
    release: Release
    api_rate: float
    job_rate: float

    @property
    def total(self) -> int:
        """How many probes the send made."""
        return round((self.end - self.start) * (self.api_rate + self.job_rate))

    def count(self, start: float, end: float, rate: float) -> float:
        """The probes of this send within [start, end)."""
        overlap = max(0.0, min(end, self.end) - max(start, self.start))
        return overlap * rate


def probes_sent(
    release: Release, *, api: bool, jobs: bool, at: float, seconds: float, rate: float, limit: int
) -> Probes | None:
    """What a synthetic send does from `at`: `rate` probes a second, at most `limit`, the API's
    and the jobs' in turn when both are asked for; None when it sends none."""
    kinds = int(api) + int(jobs)
    sent = min(limit, int(rate * seconds)) if kinds else 0
    if not sent:
        return None
    share = rate / kinds
    return Probes(at, at + sent / rate, release, share if api else 0.0, share if jobs else 0.0)


def probe_requests(sends: list[Probes], api: str, start: float, end: float) -> float:
    """Requests the probes sent to `api` (its tag URL) within a window: API probes and job
    submissions both."""
    return sum(p.count(start, end, p.api_rate + p.job_rate) for p in sends if p.release.api == api)


def release(n: int) -> Release:
    return Release(f"{API}-{n:08x}-{n:07x}", f"{WORKER}-{n:08x}-{n:07x}")


@dataclass
class Workload:
    name: str
    revisions: list[str] = field(default_factory=list)
    serving: dict[str, int] = field(default_factory=dict)

    def apply(self, targets: tuple[TrafficTarget, ...], *, tags: bool) -> None:
        validate(targets, key=self.name, service=self.name)
        resolved: dict[str, int] = {}
        for target in targets:
            revision = self.revisions[-1] if target.is_latest else target.revision
            if revision not in self.revisions:
                raise DeployError(f"{self.name}: revision {revision} does not exist")
            if target.tag is not None and not tags:
                raise DeployError(f"{self.name}: takes no tags")
            resolved[revision] = resolved.get(revision, 0) + target.percent
        self.serving = {r: p for r, p in resolved.items() if p > 0}

    def create(self, revision: str) -> None:
        if revision not in self.revisions:
            self.revisions.append(revision)


@dataclass
class World:
    """Both workloads, the ledger in state, and what the checkout ships next."""

    next_release: Release = field(default_factory=lambda: release(1))
    api: Workload = field(default_factory=lambda: Workload(API))
    worker: Workload = field(default_factory=lambda: Workload(WORKER))
    ledger: Ledger = field(default_factory=Ledger)
    history: list[dict[str, int]] = field(default_factory=list)
    ups: list[str] = field(default_factory=list)
    failing_ups: int = 0
    # Shifts that fail, by their number (counted over the world's life): the message, and
    # whether the service's part applied before the worker pool's failed.
    shift_failures: dict[int, tuple[str, bool]] = field(default_factory=dict)
    shifts: int = 0
    smoke_failures: set[str] = field(default_factory=set)
    windows: dict[str, Callable[[float, float], Window]] = field(default_factory=dict)
    time: float = 1_800_000_000.0
    delay_seconds: float = 0.0
    # The whole API's traffic, steady, split between revisions as the traffic stands.
    requests_per_second: float = 20.0
    # When each API traffic state began, for windows that follow the traffic over time.
    timeline: list[tuple[float, dict[str, int]]] = field(default_factory=list)
    # Per revision, the share of its requests that fail at a given time (default: 0.1 %).
    error_fraction: dict[str, Callable[[float], float]] = field(default_factory=dict)
    # The jobs the whole worker pool finishes a second, split as its instances are.
    jobs_per_second: float = 2.0
    worker_timeline: list[tuple[float, dict[str, int]]] = field(default_factory=list)
    # Per worker revision, the share of its attempts that fail (default: none).
    job_failure: dict[str, float] = field(default_factory=dict)
    # Synthetic probes a second (the controller sends them only if its settings declare some).
    probe_rate: float = 10.0
    probes: list[Probes] = field(default_factory=list)
    # The plans every ship was given (what the migrations job was let run, among others).
    shipped: list[ReleasePlan] = field(default_factory=list)

    def controller(self, settings: ReleaseSettings, approver: Approvals | None = None) -> Controller:
        """The real controller, with this world as every port but the approvals."""
        return controller_over(self, settings, approver or Approvals())

    # Deployer
    def ship(self, plan: ReleasePlan) -> Release:
        self.ups.append("ship")
        self.shipped.append(plan)
        if self.failing_ups:
            self.failing_ups -= 1
            raise DeployError("migrations failed")
        self.api.create(self.next_release.api)
        self.worker.create(self.next_release.worker)
        self._apply(plan)
        return self.next_release

    def shift(self, plan: ReleasePlan) -> None:
        if not plan.traffic_only:
            raise AssertionError("a shift must be traffic-only")
        self.ups.append("shift")
        self.shifts += 1
        failure = self.shift_failures.pop(self.shifts, None)
        if failure is not None:
            message, api_applied = failure
            if api_applied:
                self.api.apply(plan.api, tags=True)
            raise DeployError(message)
        self._apply(plan)

    def fail_shift(self, nth: int, message: str, *, api_applied: bool = False) -> None:
        """The `nth` shift from now fails with `message` (after the service's part, if told)."""
        self.shift_failures[self.shifts + nth] = (message, api_applied)

    def _apply(self, plan: ReleasePlan) -> None:
        self.api.apply(plan.api, tags=True)
        self.worker.apply(plan.worker, tags=False)
        self.ledger = plan.ledger
        self.history.append(dict(self.api.serving))
        self.timeline.append((self.time, dict(self.api.serving)))
        self.worker_timeline.append((self.time, dict(self.worker.serving)))

    # LiveReader
    def read(self) -> Live:
        return Live(api=dict(self.api.serving), worker=dict(self.worker.serving), ledger=self.ledger)

    # Metrics
    def window(self, revision: str, start: float, end: float) -> Window:
        """The whole traffic's requests each second, this revision's share of them as the traffic
        stood at that second, and only what is readable: nothing newer than `end - delay`."""
        if revision in self.windows:
            return self.windows[revision](start, end)
        fraction = self.error_fraction.get(revision, _healthy)
        requests = errors = 0.0
        t = start
        readable = end - self.delay_seconds
        while t < readable:
            rate = self.requests_per_second * self.share_at(revision, t) / 100
            requests += rate
            errors += rate * fraction(t)
            t += 1
        probed = probe_requests(self.probes, revision, start, readable)
        requests += probed
        errors += probed * fraction(start)
        return Window(int(requests), int(errors), 120.0 if requests else None)

    def share_at(
        self, revision: str, t: float, timeline: list[tuple[float, dict[str, int]]] | None = None
    ) -> int:
        shares = [
            serving for since, serving in (self.timeline if timeline is None else timeline) if since <= t
        ]
        return shares[-1].get(revision, 0) if shares else 0

    # JobMetrics: read from the database, so nothing to wait for.
    def jobs(self, revision: str, start: float, end: float) -> JobWindow:
        """The pool's jobs, and the probe jobs, this revision's share of them as its instances stood."""
        attempts = 0.0
        t = start
        while t < end:
            share = self.share_at(revision, t, self.worker_timeline) / 100
            attempts += self.jobs_per_second * share
            attempts += sum(p.count(t, t + 1, p.job_rate) for p in self.probes) * share
            t += 1
        failures = int(attempts * self.job_failure.get(revision, 0.0))
        return JobWindow(int(attempts), failures, 0, 4.0 if attempts else None)

    # Synthetic
    def send(self, release: Release, *, api: bool, jobs: bool, seconds: float, limit: int) -> int:
        sent = probes_sent(
            release, api=api, jobs=jobs, at=self.time, seconds=seconds, rate=self.probe_rate, limit=limit
        )
        self.time += seconds
        if sent is None:
            return 0
        self.probes.append(sent)
        return sent.total

    # Smoke
    def check(self, candidate: Release) -> str | None:
        return "GET /ready answered 503" if candidate.api in self.smoke_failures else None

    # Clock
    def now(self) -> float:
        return self.time

    def sleep(self, seconds: float) -> None:
        self.time += seconds

    def served(self, revision: str) -> bool:
        return any(state.get(revision, 0) > 0 for state in self.history)


def _healthy(t: float) -> float:
    """One request in a thousand fails, as it does on a good day."""
    return 0.001


class Approvals:
    """Answers approvals from a script: True, False or None (nobody to ask)."""

    def __init__(self, *answers: bool | None) -> None:
        self.answers = list(answers)
        self.asked: list[int] = []

    def approve(self, percent: int) -> bool | None:
        self.asked.append(percent)
        return self.answers.pop(0) if self.answers else True
