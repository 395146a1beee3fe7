"""What the release controller needs from the world: the cloud's, or the rehearsal's.

The controller (release/controller.py) holds every decision. Each port below has two
implementations, one for Google Cloud (release/cloud.py) and one for the local
rehearsal (release/rehearsal/); the sequence tests drive a third, over the
control-plane model.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from release.compat.report import CompatReport
from release.gates import JobWindow, Window
from stacks.ledger import Ledger, Release
from stacks.release_plan import ReleasePlan


@dataclass(frozen=True, slots=True)
class Live:
    """What serves now, read from the control plane (Cloud Run's traffic_statuses and
    instanceSplitStatuses), never from "the latest created"; and the ledger from the stack.

    `api` and `worker` map revision names to their current percent (0 % entries omitted);
    both are empty before the first deploy.
    """

    api: Mapping[str, int] = field(default_factory=dict)
    worker: Mapping[str, int] = field(default_factory=dict)
    ledger: Ledger = field(default_factory=Ledger)

    # A reader may still hand back a 0 % entry (a tag holds it): serving means a share above 0.
    @property
    def serving_api(self) -> list[str]:
        """The API revisions with a share of the traffic."""
        return [revision for revision, percent in self.api.items() if percent > 0]

    @property
    def serving_worker(self) -> list[str]:
        """The worker revisions with a share of the instances."""
        return [revision for revision, percent in self.worker.items() if percent > 0]


class LiveReader(Protocol):
    def read(self) -> Live:
        """The serving revisions and the ledger, as of now."""
        ...


class Deployer(Protocol):
    def ship(self, plan: ReleasePlan) -> Release:
        """A full `pulumi up` with `plan`: builds, migrates, creates the candidate's revisions.

        Returns the release the declared program ships (its API and worker revision names).
        Raises DeployError if the update fails.
        """
        ...

    def shift(self, plan: ReleasePlan) -> None:
        """A traffic-only `pulumi up` with `plan` (plan.traffic_only is True). Raises DeployError."""
        ...


class DeployError(RuntimeError):
    """A `pulumi up` (or its local stand-in) failed."""


class Metrics(Protocol):
    # How long after a request its metrics can be read: a step passes only once its whole soak
    # is readable (Cloud Monitoring: up to 180 s; a Prometheus scrape: none).
    delay_seconds: float

    def window(self, revision: str, start: float, end: float) -> Window:
        """What `revision` of the API served between two wall-clock times (seconds since the epoch)."""
        ...


class JobMetrics(Protocol):
    def jobs(self, revision: str, start: float, end: float) -> JobWindow:
        """What `revision` of the worker did with its attempts between two wall-clock times.

        Read from the database the attempts are written to: no ingestion delay.
        """
        ...


class Synthetic(Protocol):
    def send(self, release: Release, *, api: bool, jobs: bool, seconds: float, limit: int) -> int:
        """Probe the candidate for `seconds` at the declared rate, at most `limit` probes: requests
        to its tag URL (`api`) and jobs its worker takes (`jobs`), from the probe tenant.

        Returns how many probes were sent; blocks for `seconds` (it stands in for the poll's sleep).
        """
        ...


class NoSynthetic:
    """A stack that declares no probe traffic: the poll just sleeps."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock

    def send(self, release: Release, *, api: bool, jobs: bool, seconds: float, limit: int) -> int:
        self.clock.sleep(seconds)
        return 0


class SchemaGate(Protocol):
    def pending_contract(self) -> list[str]:
        """The contract migrations of the program being shipped that the stack's database has not
        run (held by `python -m app migrate` unless a release lets them run)."""
        ...

    def check(self, commit: str, *, allow_contract: Collection[str] = ()) -> CompatReport:
        """Whether the code at `commit` works on the schema the program's expand migrations (and
        the contract ones in `allow_contract`) make of its own (release/compat/gate.py)."""
        ...


class Smoke(Protocol):
    def check(self, release: Release) -> str | None:
        """Smoke-test the candidate on its own URL: None if it passed, else what failed."""
        ...


class Approver(Protocol):
    def approve(self, percent: int) -> bool | None:
        """Whether to go on to `percent`: True, False (abort and roll back), None (nobody to ask)."""
        ...


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the epoch."""
        ...

    def sleep(self, seconds: float) -> None: ...
