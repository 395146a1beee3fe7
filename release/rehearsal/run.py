"""One rehearsal: the local system up, the stable release serving under load, then a release.

The release is the real controller (release/controller.py) with the local ports: the
API's gates read each revision's Prometheus /metrics, the worker's read Postgres, and a quiet
step is filled with the probe tenant's synthetic traffic. What the rehearsal adds is the load,
and the checks an SRE would make of the run itself: no request failed because traffic moved,
the traffic ended where the controller said it did, and no job was lost or run twice.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from release.compat.port import LocalSchemaGate
from release.controller import EXIT_ERROR, EXIT_OK, EXIT_ROLLED_BACK, EXIT_USAGE, Controller, Report
from release.probes import HttpSynthetic, PostgresJobs
from release.rehearsal.jobs import JobSummary, settle
from release.rehearsal.load import DEFAULT_RATE, LoadGenerator, LoadSummary
from release.rehearsal.local import (
    AlwaysApprove,
    LocalDeployer,
    LocalLive,
    LocalSmoke,
    Move,
    SystemClock,
)
from release.rehearsal.migrations import candidate_tree
from release.rehearsal.prometheus import PrometheusMetrics, Reading
from release.rehearsal.router import WeightedRouter
from release.rehearsal.system import ROOT, LocalSystem
from release.source import source_commit
from stacks.ledger import Ledger, Outcome, Release
from stacks.settings.release import ReleaseSettings, parse

# The rehearsal's release profile, in the stack file's own keys. Seconds, not the cloud's
# minutes: each revision's /metrics is current to the scrape (0.5 s), where Cloud Monitoring
# lags by up to 4 minutes (config.CLOUD_MIN_SOAK_SECONDS). At the default load, the 10 % step
# gives the candidate about 6 requests a second, so minRequests is reached within the soak.
PROFILE: dict[str, Any] = {
    "steps": [10, 50, 100],
    "soakSeconds": 5,
    "maxSoakSeconds": 20,
    "minRequests": 25,
    "maxErrorRatio": 0.02,
    "maxP95LatencyMs": 1000,
    "maxErrorRatioIncrease": 0.01,
    "maxLatencyRatio": 2.0,
    # At the default load the candidate worker's instance (10 %) takes about one job a second;
    # a step short of this many attempts is filled with probe jobs.
    "minJobAttempts": 10,
    "maxJobFailureRatio": 0.05,
    "maxJobP95Seconds": 2.0,
    "maxExpiredLeases": 0,
    "maxJobFailureRatioIncrease": 0.05,
    "maxJobDurationRatio": 3.0,
    # Enough for every step of a release with no load at all (--rate 0).
    "synthetic": {"rate": 25, "budget": 3000},
}
# The candidate's faults, by the part they break. `api` fails one request in five: the smoke
# test passes (probes never fail), and only the error-ratio gates can catch it. `worker` fails
# three attempts in ten (retryably: the jobs finish on stable after the rollback), which only
# the worker's gates can see.
FAULTS: dict[str, dict[str, str]] = {
    "api": {"FAULT_ERROR_RATIO": "0.2"},
    "worker": {"FAULT_JOB_ERROR_RATIO": "0.3"},
}
FAULT = FAULTS["api"]
# How long the jobs submitted during a release may take to finish once it has ended (a job a
# faulty candidate failed is retried on stable).
SETTLE_SECONDS = 60.0
# Requests the load must have completed on stable before the release starts.
WARM_REQUESTS = 50


def profile() -> ReleaseSettings:
    """The rehearsal's ReleaseSettings, validated as the stack file's are (without the cloud's floor)."""
    settings, problems = parse(PROFILE, cloud=False)
    if problems:
        raise ValueError("the rehearsal profile is invalid: " + "; ".join(problems))
    return settings


@dataclass(frozen=True)
class Result:
    """A release rehearsed: the controller's report, and what the load and the router saw."""

    report: Report
    stable: Release
    candidate: str
    faults: Mapping[str, str]
    load: LoadSummary
    moves: list[Move]
    readings: list[Reading]
    serving: Mapping[str, int]
    # After the last move: requests that started then, and which revisions served them.
    served_after: Mapping[str, int]
    # The worker revisions, and the instance split the release left.
    stable_worker: str = ""
    candidate_worker: str = ""
    worker_serving: Mapping[str, int] = field(default_factory=dict)
    # The jobs submitted during the release (probes included), once they have all finished.
    jobs: JobSummary | None = None
    probes: Mapping[str, int] = field(default_factory=dict)
    # The schema change the candidate carried (release/rehearsal/migrations.py), if any.
    migration: str | None = None

    @property
    def refused(self) -> bool:
        """A release the schema gate is to refuse before it ships."""
        return self.migration == "breaking"

    @property
    def expected_exit(self) -> int:
        if self.refused:
            return EXIT_USAGE
        return EXIT_ROLLED_BACK if self.faults else EXIT_OK

    def problems(self) -> list[str]:
        """What makes this run a failed rehearsal, whatever the controller decided."""
        found = []
        if self.report.exit_code != self.expected_exit:
            found.append(f"the controller exited {self.report.exit_code}, expected {self.expected_exit}")
        back = bool(self.faults) or self.refused
        home = self.stable.api if back else self.candidate
        if self.refused and self.candidate:
            found.append(f"a refused release started a revision: {self.candidate}")
        if dict(self.serving) != {home: 100}:
            found.append(f"the traffic ended on {dict(self.serving)}, expected 100 % on {home}")
        strays = sorted(set(self.served_after) - {home})
        if strays:
            found.append(f"after the last move, requests still reached {strays}")
        unexpected = {r: n for r, n in self.load.failed.items() if not (self.faults and r == self.candidate)}
        if unexpected:
            found.append(f"requests failed that no fault explains: {unexpected}")
        if self.load.statuses.get(429):
            # The rehearsal's tenants have no limits: a 429 is a job the load could not submit.
            found.append(f"{self.load.statuses[429]} submissions were refused with 429")
        if not self.faults and self.load.failed_during_moves:
            found.append(f"{self.load.failed_during_moves} requests failed during the traffic moves")
        worker_home = self.stable_worker if back else self.candidate_worker
        if dict(self.worker_serving) != {worker_home: 100}:
            found.append(
                f"the worker pool ended on {dict(self.worker_serving)}, expected 100 % on {worker_home}"
            )
        if self.jobs is not None:
            if self.jobs.unfinished:
                found.append(
                    f"{self.jobs.unfinished} jobs never finished (lost) within {SETTLE_SECONDS:.0f} s"
                )
            if self.jobs.duplicated:
                found.append(f"{self.jobs.duplicated} jobs succeeded more than once (run twice)")
        return found

    @property
    def exit_code(self) -> int:
        return EXIT_ERROR if self.problems() else self.report.exit_code


class Rehearsal:
    """The stable revision serving everything behind the router, under load, on a local system."""

    def __init__(self, system: LocalSystem, rate: float = DEFAULT_RATE) -> None:
        if rate < 0:
            raise ValueError(f"the load's rate is requests a second, 0 or more (got {rate})")
        self.system = system
        self.rate = rate
        self.router = WeightedRouter()
        self.metrics = PrometheusMetrics()
        self.deployer = LocalDeployer(system, self.router, self.metrics)
        # What the stable release was shipped from, as the ledger records it: the schema gate
        # runs that commit's code against a release's migrations.
        self.commit = source_commit()
        self.load = LoadGenerator(self.router.url, system.token(), rate=rate)
        self.stable = Release("", "")

    @classmethod
    @contextmanager
    def running(cls, root: Path, rate: float = DEFAULT_RATE) -> Iterator[Rehearsal]:
        """A new local system in `root` and a rehearsal on it; everything stops on the way out,
        on errors and Ctrl-C too."""
        with ExitStack() as stack:
            system = LocalSystem(root)
            stack.callback(system.stop)
            system.start()
            yield stack.enter_context(cls.on(system, rate))

    @classmethod
    @contextmanager
    def on(cls, system: LocalSystem, rate: float = DEFAULT_RATE) -> Iterator[Rehearsal]:
        """A rehearsal on a running system; its processes and threads stop on the way out."""
        rehearsal = cls(system, rate)
        with ExitStack() as stack:
            # Registered before each part starts, run in reverse: the load stops first.
            stack.callback(rehearsal._stop_revisions)
            stack.callback(rehearsal.metrics.stop)
            rehearsal.metrics.start()
            stack.callback(rehearsal.router.stop)
            rehearsal.router.start()
            rehearsal._adopt_stable()
            if rate > 0:  # --rate 0: no real load; the release is judged on its own probes
                stack.callback(rehearsal.load.stop)
                rehearsal.load.start()
                rehearsal.load.wait_for(WARM_REQUESTS)
            yield rehearsal

    def _adopt_stable(self) -> None:
        api_name, worker_name = self.system.next_names({})
        api = self.system.start_api(api_name)
        stable = Release(api_name, worker_name)
        # The stable release was promoted by an earlier release, as far as the ledger knows.
        ledger = Ledger().record(
            stable, Outcome.PROMOTED, _stamp(), "serving when the rehearsal began", commit=self.commit
        )
        self.stable = self.deployer.adopt(api, worker_name, ledger)

    def _stop_revisions(self) -> None:
        for api in self.deployer.apis.values():
            self.system.stop_api(api)

    def release(
        self,
        faults: Mapping[str, str],
        settings: ReleaseSettings,
        out: Callable[[str], None] = print,
        migration: str | None = None,
    ) -> Result:
        """Ship a candidate with `faults` (and the `migration` schema change) and let the
        controller take it through the steps."""
        self.deployer.faults = dict(faults)
        if migration is not None:
            self.deployer.tree = candidate_tree(migration, self.system.root / "candidate")
        outcomes, moves, readings = (
            len(self.load.outcomes),
            len(self.deployer.moves),
            len(self.metrics.readings),
        )
        known, known_workers = set(self.deployer.apis), set(self.deployer.workers)
        synthetic = HttpSynthetic(
            url_for=lambda release: self.deployer.apis[release.api].url,
            headers=lambda: {"Authorization": f"Bearer {self.system.probe_token()}"},
            rate=settings.synthetic.rate,
        )
        controller = Controller(
            settings=settings,
            live=LocalLive(self.deployer),
            deployer=self.deployer,
            metrics=self.metrics,
            jobs=PostgresJobs(self.system.postgres.dsn()),
            smoke=LocalSmoke(self.deployer),
            synthetic=synthetic,
            schema=LocalSchemaGate(root=ROOT, head=self.deployer.tree, dsn=self.system.postgres.dsn()),
            approver=AlwaysApprove(),
            clock=SystemClock(),
            out=out,
            source=self.commit,
        )
        stable = self.stable
        started = time.time()
        report = controller.release()
        ended = time.time()
        # Requests sent after the last move, and those still in flight through it, finish.
        time.sleep(1.0)
        done = self.load.outcomes[outcomes:]
        made = self.deployer.moves[moves:]
        candidate = next((name for name in self.deployer.apis if name not in known), "")
        last = made[-1].end if made else 0.0
        served_after: dict[str, int] = {}
        for outcome in done:
            if outcome.start > last:
                served_after[outcome.revision] = served_after.get(outcome.revision, 0) + 1
        if report.exit_code == EXIT_OK and report.release is not None:
            self.stable = report.release
        jobs = settle(self.system.postgres.dsn(), started, ended, SETTLE_SECONDS)
        return Result(
            report=report,
            stable=stable,
            candidate=candidate,
            faults=dict(faults),
            load=LoadSummary.of(done, [(m.start, m.end) for m in made]),
            moves=made,
            readings=self.metrics.readings[readings:],
            serving={name: percent for name, percent in self.router.weights().items() if percent > 0},
            served_after=served_after,
            stable_worker=stable.worker,
            candidate_worker=next((w for w in self.deployer.workers if w not in known_workers), ""),
            worker_serving=dict(self.deployer.worker),
            jobs=jobs,
            probes=dict(Counter(kind for kind, _ in synthetic.sent)),
            migration=migration,
        )


def describe(result: Result) -> list[str]:
    """The rehearsal's short report: steps, windows, failed requests, time back on stable."""
    faults = ", ".join(f"{k}={v}" for k, v in result.faults.items()) or "none"
    lines = [
        "",
        "== rehearsal report ==",
        f"stable:    {result.stable.api}",
        f"candidate: {result.candidate} (faults: {faults})",
        "steps (candidate's share after each traffic update):",
    ]
    for move in result.moves:
        share = move.api.get(result.candidate, 0)
        lines.append(f"  {share:3d} %  api {dict(move.api)}  worker {dict(move.worker)}")
    # Every reading of a step starts at the step's start: the last one per revision is the judged one.
    judged = {(r.start, r.revision): r for r in result.readings}
    lines.append(f"windows measured: {len(result.readings)}, of which judged (the last of each step):")
    for reading in judged.values():
        w = reading.window
        p95 = f"{w.p95_ms:.0f} ms" if w.p95_ms is not None else "n/a"
        role = "candidate" if reading.revision == result.candidate else "stable"
        span = reading.end - reading.start
        lines.append(f"  {role:9s} over {span:4.1f} s: {w.requests} requests, {w.errors} 5xx, p95 {p95}")
    load = result.load
    lines.append(f"requests through the router: {sum(load.served.values())}, by revision {load.served}")
    lines.append(
        f"failed requests (5xx or no response): {load.total_failed}, by revision {load.failed or {}}"
    )
    lines.append(f"failed requests in flight during a traffic move: {load.failed_during_moves}")
    took = result.report.timings.get("breach_to_stable_seconds")
    if took is not None:
        drain = result.moves[-1].drain_seconds if result.moves else 0.0
        lines.append(
            f"breach to 100 % on stable: {took * 1000:.1f} ms"
            f" (of which in-flight requests draining: {drain * 1000:.1f} ms)"
        )
    if took is not None and result.moves:
        lines.append(
            f"breach to every job on stable (the candidate's worker instances drained and exited):"
            f" {result.moves[-1].worker_seconds * 1000:.0f} ms"
        )
    if result.probes:
        lines.append(f"synthetic probes sent: {dict(result.probes)}")
    if result.jobs is not None:
        j = result.jobs
        lines.append(
            f"jobs submitted during the release: {j.submitted}; lost (never finished): {j.unfinished};"
            f" run twice: {j.duplicated}; failed for good: {j.failed}; finished by {j.by_revision}"
        )
    lines.append(f"traffic now: {dict(result.serving)}; worker instances: {dict(result.worker_serving)}")
    lines.append(f"controller: {result.report.summary()}")
    problems = result.problems()
    lines += [f"REHEARSAL FAILED: {p}" for p in problems] or ["rehearsal: as expected"]
    return lines


def _stamp() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
