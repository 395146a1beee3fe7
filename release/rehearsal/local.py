"""The release controller's ports on the local system (see release/ports.py).

Shipping starts the candidate's API process; a traffic-only update moves the router's weights
and the worker pool's instances: each revision runs as many worker processes as its share of
WORKER_INSTANCES; the ones that lost their share stop (giving back what they could not finish)
while the new ones start. The ledger is kept
here, as the stack's state keeps it in the cloud. Plans are held to the rules Cloud Run enforces
(components.traffic.validate), so a plan the cloud would refuse fails here too.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from app.local.servers import ServerError
from components.traffic import TrafficError, TrafficTarget, validate
from release.ports import DeployError, Live
from release.rehearsal.prometheus import PrometheusMetrics
from release.rehearsal.router import RouterError, WeightedRouter
from release.rehearsal.system import (
    API_SERVICE,
    ROOT,
    WORKER_POOL,
    ApiProcess,
    LocalSystem,
    WorkerProcess,
)
from stacks.ledger import Ledger, Release
from stacks.release_plan import ReleasePlan

# In-flight requests on a revision sent away from get this long to finish where they started.
DRAIN_SECONDS = 30.0
# The worker pool's instances: ten, so that a 10 % step is one instance of the candidate.
WORKER_INSTANCES = 10


@dataclass(frozen=True, slots=True)
class Move:
    """One traffic update: when it started and ended, the split it left, and how long the drain took."""

    start: float
    end: float
    api: Mapping[str, int]
    worker: Mapping[str, int]
    drain_seconds: float
    # From the worker split's update until every instance that lost its share had exited: from
    # then on, every job goes to the revisions that kept theirs.
    worker_seconds: float = 0.0


@dataclass
class LocalDeployer:
    """The Deployer port: the candidate is a new API process; traffic is the router's weights."""

    system: LocalSystem
    router: WeightedRouter
    metrics: PrometheusMetrics
    # Settings the next candidate starts with (FAULT_ERROR_RATIO, FAULT_DELAY_MS).
    faults: Mapping[str, str] = field(default_factory=dict)
    ledger: Ledger = field(default_factory=Ledger)
    worker: dict[str, int] = field(default_factory=dict)
    apis: dict[str, ApiProcess] = field(default_factory=dict)
    workers: list[str] = field(default_factory=list)
    moves: list[Move] = field(default_factory=list)
    instances: dict[str, list[WorkerProcess]] = field(default_factory=dict)
    # Each worker revision's settings (faults included), kept to start more of its instances.
    worker_faults: dict[str, Mapping[str, str]] = field(default_factory=dict)
    # The source tree the next candidate ships (None: this checkout), and each worker revision's.
    tree: Path | None = None
    worker_trees: dict[str, Path] = field(default_factory=dict)

    def adopt(self, api: ApiProcess, worker: str, ledger: Ledger) -> Release:
        """Put an already running revision behind the router with all the traffic (the stable one),
        and all the worker pool's instances on its worker revision."""
        self._register(api, worker)
        self.worker_faults[worker] = {}
        self._scale({worker: 100})
        self.worker = {worker: 100}
        self.router.set_weights({api.name: 100})
        self.ledger = ledger
        return Release(api.name, worker)

    def ship(self, plan: ReleasePlan) -> Release:
        """A new API revision and worker revision, started and ready, then the plan's traffic."""
        tree = self.tree or ROOT
        api_name, worker_name = self.system.next_names(self.faults, tree)
        try:
            # As the cloud's `pulumi up` does: the migrations job first, then the new revisions.
            self.system.migrate(tree, plan.allowed_contract)
            api = self.system.start_api(api_name, self.faults, tree)
        except ServerError as error:
            raise DeployError(f"the candidate did not start: {error}") from error
        self._register(api, worker_name)
        self.worker_faults[worker_name] = dict(self.faults)
        self.worker_trees[worker_name] = tree
        self._apply(plan)
        return Release(api_name, worker_name)

    def shift(self, plan: ReleasePlan) -> None:
        """A traffic-only update: the router's weights, the worker split and the ledger."""
        if not plan.traffic_only:
            raise DeployError("shift() takes traffic-only plans; a plan that builds goes through ship()")
        self._apply(plan)

    def _register(self, api: ApiProcess, worker: str) -> None:
        self.apis[api.name] = api
        self.workers.append(worker)
        self.router.add(api.name, api.url)
        self.metrics.watch(api.name, api.url)

    def _apply(self, plan: ReleasePlan) -> None:
        start = time.time()
        try:
            api = self._resolve(plan.api, list(self.apis), API_SERVICE)
            worker = self._resolve(plan.worker, self.workers, WORKER_POOL)
            before = {name for name, percent in self.router.weights().items() if percent > 0}
            self.router.set_weights(api)
        except (TrafficError, RouterError) as error:
            raise DeployError(str(error)) from error
        self.worker = {name: percent for name, percent in worker.items() if percent > 0}
        self.ledger = plan.ledger
        try:
            worker_seconds = self._scale(self.worker)
        except ServerError as error:
            raise DeployError(f"the worker pool's split did not apply: {error}") from error
        # Done when nothing is left on what lost its share, as Cloud Run's update is done when
        # the new split serves.
        drained = self.router.drain({name for name in before if api.get(name, 0) == 0}, DRAIN_SECONDS)
        self.moves.append(Move(start, time.time(), api, dict(self.worker), drained, worker_seconds))

    def _scale(self, split: Mapping[str, int]) -> float:
        """Each revision's instances to its share of WORKER_INSTANCES; seconds until every
        instance that lost its share had exited.

        The surplus instances are told to stop first (SIGTERM: they claim nothing more, finish or
        give back what they hold, and exit), while the new ones start: a rollback must not wait
        for a process to start before the faulty revision stops taking jobs, and the revisions
        that keep their share go on taking them meanwhile.
        """
        started = time.monotonic()
        wanted = instance_counts(split, WORKER_INSTANCES)
        surplus: list[WorkerProcess] = []
        for revision, running in self.instances.items():
            keep = wanted.get(revision, 0)
            surplus += running[keep:]
            del running[keep:]
        for worker in surplus:
            worker.terminate()
        spawned: list[WorkerProcess] = []
        for revision, count in wanted.items():
            running = self.instances.setdefault(revision, [])
            for _ in range(count - len(running)):
                worker = self.system.spawn_worker(
                    revision, self.worker_faults.get(revision, {}), self.worker_trees.get(revision, ROOT)
                )
                running.append(worker)
                spawned.append(worker)
        self.system.stop_workers(surplus)
        stopped = time.monotonic() - started
        for worker in spawned:
            worker.wait_ready()
        return stopped

    @staticmethod
    def _resolve(targets: tuple[TrafficTarget, ...], revisions: list[str], service: str) -> dict[str, int]:
        """Percent by revision name; "latest" is the revision created last."""
        key = f"{service}.traffic"
        validate(targets, key=key, service=service)
        shares: dict[str, int] = {}
        for target in targets:
            revision = revisions[-1] if target.is_latest and revisions else target.revision
            if revision not in revisions:
                raise DeployError(f"{service}: revision {revision} does not exist")
            shares[revision] = shares.get(revision, 0) + target.percent
        return shares


def instance_counts(split: Mapping[str, int], instances: int) -> dict[str, int]:
    """Instances per revision for a percent split: largest remainders, so they add up to
    `instances`, and a revision with a share keeps at least one instance."""
    exact = {revision: instances * percent / 100 for revision, percent in split.items() if percent > 0}
    counts = {revision: int(share) for revision, share in exact.items()}
    for revision in sorted(exact, key=lambda r: exact[r] - counts[r], reverse=True):
        if sum(counts.values()) >= instances:
            break
        counts[revision] += 1
    for revision in counts:
        if counts[revision] == 0:
            largest = max(counts, key=lambda r: counts[r])
            counts[largest] -= 1
            counts[revision] = 1
    return counts


@dataclass
class LocalLive:
    """The LiveReader port: what the router and the worker split serve now, and the ledger."""

    deployer: LocalDeployer

    def read(self) -> Live:
        api = {name: percent for name, percent in self.deployer.router.weights().items() if percent > 0}
        return Live(api=api, worker=dict(self.deployer.worker), ledger=self.deployer.ledger)


@dataclass
class LocalSmoke:
    """The Smoke port: the candidate's own `/ready`, on its own port (its tag URL in the cloud)."""

    deployer: LocalDeployer

    def check(self, release: Release) -> str | None:
        api = self.deployer.apis.get(release.api)
        if api is None:
            return f"{release.api} is not running here"
        try:
            with urllib.request.urlopen(f"{api.url}/ready", timeout=5) as response:  # noqa: S310 (loopback)
                return None if response.status == 200 else f"GET /ready answered {response.status}"
        except urllib.error.HTTPError as error:
            return f"GET /ready answered {error.code}"
        except OSError as error:
            return f"GET /ready failed: {error}"


class AlwaysApprove:
    """The Approver port of a rehearsal: nobody to ask, every step approved."""

    def approve(self, percent: int) -> bool | None:
        return True


class SystemClock:
    """The Clock port: wall-clock time and real sleeps."""

    def now(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)
