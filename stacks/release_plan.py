"""The traffic a release step declares: what the program receives from the release controller.

Every traffic state of a release is a `pulumi up` of the declared program with one of these
plans. Without a plan (a plain `pulumi up`), the program leaves the traffic as it stands.
"""

from __future__ import annotations

from dataclasses import dataclass

from components.traffic import LATEST, TrafficTarget
from stacks.ledger import Ledger, Release

STABLE_TAG = "stable"
CANDIDATE_TAG = "candidate"


class UnsafePlanError(ValueError):
    """A plan that would send traffic to a revision that failed or was rolled back."""


@dataclass(frozen=True, slots=True)
class ReleasePlan:
    """API traffic and worker instance split for one `pulumi up`, and the ledger to record.

    `traffic_only` updates change nothing but the traffic, the split and the ledger: no image
    build, no migrations, no new revision, whatever the checkout holds.
    """

    api: tuple[TrafficTarget, ...]
    worker: tuple[TrafficTarget, ...]
    ledger: Ledger
    traffic_only: bool
    # Revisions a person chose to retry although the ledger marks them bad (--retry).
    allowed: frozenset[str] = frozenset()
    # Contract migrations this update's migrations job may run (`--allow-contract`); the rest
    # are held (release/controller.py, `_schema`).
    allowed_contract: tuple[str, ...] = ()

    def pinned(self) -> frozenset[str]:
        """Revisions this plan gives a share above 0 %, by name."""
        return frozenset(t.revision for t in (*self.api, *self.worker) if t.percent > 0 and not t.is_latest)

    def check(self) -> ReleasePlan:
        """The plan itself, or UnsafePlanError if it gives traffic to a revision the ledger marks bad."""
        bad = sorted((self.pinned() & self.ledger.bad_revisions()) - self.allowed)
        if bad:
            raise UnsafePlanError(f"refusing to send traffic to {bad}: the ledger records them as failed")
        return self


def ship(stable: Release | None, ledger: Ledger, allowed_contract: tuple[str, ...] = ()) -> ReleasePlan:
    """The candidate ships at 0 % under the candidate tag while the stable release keeps everything.

    With no stable release (the first deploy), the new revision takes everything.
    """
    if stable is None:
        return first_deploy(ledger, traffic_only=False)
    return ReleasePlan(
        api=(TrafficTarget(100, stable.api, STABLE_TAG), TrafficTarget(0, LATEST, CANDIDATE_TAG)),
        worker=(TrafficTarget(100, stable.worker), TrafficTarget(0)),
        ledger=ledger,
        traffic_only=False,
        allowed_contract=allowed_contract,
    ).check()


def first_deploy(ledger: Ledger, *, traffic_only: bool) -> ReleasePlan:
    """The only revision there is takes everything (it is smoke-tested before it is recorded good)."""
    return ReleasePlan(
        api=(TrafficTarget(100, LATEST, CANDIDATE_TAG),),
        worker=(TrafficTarget(100),),
        ledger=ledger,
        traffic_only=traffic_only,
    ).check()


def step(
    stable: Release, candidate: Release, percent: int, ledger: Ledger, allowed: frozenset[str] = frozenset()
) -> ReleasePlan:
    """`percent` of the traffic (and of the worker instances) on the candidate, the rest on stable."""
    if not 0 <= percent <= 100:
        raise ValueError(f"a step is a percent from 0 to 100, got {percent}")
    if percent == 100:
        return settle(candidate, ledger, allowed)
    if stable.api == candidate.api:  # a release that changed only the worker
        api: tuple[TrafficTarget, ...] = (
            TrafficTarget(100, stable.api, STABLE_TAG),
            TrafficTarget(0, LATEST, CANDIDATE_TAG),
        )
    else:
        api = (
            TrafficTarget(100 - percent, stable.api, STABLE_TAG),
            TrafficTarget(percent, candidate.api, CANDIDATE_TAG),
        )
    worker: tuple[TrafficTarget, ...] = (
        TrafficTarget(100 - percent, stable.worker),
        TrafficTarget(percent, candidate.worker),
    )
    if stable.worker == candidate.worker:  # a release that changed only the API
        worker = (TrafficTarget(100, stable.worker),)
    return ReleasePlan(api=api, worker=worker, ledger=ledger, traffic_only=True, allowed=allowed).check()


def settle(serving: Release, ledger: Ledger, allowed: frozenset[str] = frozenset()) -> ReleasePlan:
    """Everything on one release, pinned by name; the latest revision stays reachable on its tag.

    This is both the end of a promotion and a rollback.
    """
    return ReleasePlan(
        api=(TrafficTarget(100, serving.api, STABLE_TAG), TrafficTarget(0, LATEST, CANDIDATE_TAG)),
        worker=(TrafficTarget(100, serving.worker),),
        ledger=ledger,
        traffic_only=True,
        allowed=allowed,
    ).check()
