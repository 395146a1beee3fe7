"""The release controller's ports on the local system (see stacks/release/ports.py).

Shipping starts the candidate's API process; a traffic-only update moves the router's weights;
the worker's instance split and the ledger are kept here, as Cloud Run and the stack's state
keep them in the cloud. Plans are held to the rules Cloud Run enforces
(components.traffic.validate), so a plan the cloud would refuse fails here too.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field

from app.local.servers import ServerError
from components.traffic import TrafficError, TrafficTarget, validate
from stacks.release.ledger import Ledger, Release
from stacks.release.plan import ReleasePlan
from stacks.release.ports import DeployError, Live
from stacks.release.rehearsal.prometheus import PrometheusMetrics
from stacks.release.rehearsal.router import RouterError, WeightedRouter
from stacks.release.rehearsal.system import API_SERVICE, WORKER_POOL, ApiProcess, LocalSystem

# In-flight requests on a revision sent away from get this long to finish where they started.
DRAIN_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class Move:
    """One traffic update: when it started and ended, the split it left, and how long the drain took."""

    start: float
    end: float
    api: Mapping[str, int]
    worker: Mapping[str, int]
    drain_seconds: float


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

    def adopt(self, api: ApiProcess, worker: str, ledger: Ledger) -> Release:
        """Put an already running revision behind the router with all the traffic (the stable one)."""
        self._register(api, worker)
        self.worker = {worker: 100}
        self.router.set_weights({api.name: 100})
        self.ledger = ledger
        return Release(api.name, worker)

    def ship(self, plan: ReleasePlan) -> Release:
        """A new API revision and worker revision, started and ready, then the plan's traffic."""
        api_name, worker_name = self.system.next_names(self.faults)
        try:
            api = self.system.start_api(api_name, self.faults)
        except ServerError as error:
            raise DeployError(f"the candidate did not start: {error}") from error
        self._register(api, worker_name)
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
        # Done when nothing is left on what lost its share, as Cloud Run's update is done when
        # the new split serves.
        drained = self.router.drain({name for name in before if api.get(name, 0) == 0}, DRAIN_SECONDS)
        self.moves.append(Move(start, time.time(), api, dict(self.worker), drained))

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
