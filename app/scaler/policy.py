"""How many worker instances the queue needs: a pure function of the demand, the pool and the policy."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Demand:
    """Jobs queued and running now, seconds since the last attempt ended (None: none ever did), and
    how long the oldest queued job has waited."""

    queued: int
    running: int
    idle_seconds: float | None
    oldest_queued_seconds: float = 0.0

    @property
    def work(self) -> int:
        return self.queued + self.running


@dataclass(frozen=True)
class PoolState:
    """The pool as its control plane reports it: the instance count and the split by revision."""

    instances: int
    split: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class ScalePolicy:
    """A stack's declared bounds: the floor, the ceiling, the idle period, and an instance's jobs."""

    min_instances: int
    max_instances: int
    idle_seconds: float
    concurrency: int

    def __post_init__(self) -> None:
        if not 0 <= self.min_instances <= self.max_instances or self.max_instances < 1:
            raise ValueError(
                f"instances: need 0 <= min ({self.min_instances}) <= max ({self.max_instances}), max >= 1"
            )
        if self.concurrency < 1 or self.idle_seconds < 0:
            raise ValueError("concurrency must be positive and idle_seconds not negative")


@dataclass(frozen=True)
class Decision:
    """The instance count to set, and why."""

    instances: int
    reason: str


def instances_for_share(percent: int) -> int:
    """The fewest instances that give a revision with `percent` of the split one of them.

    Cloud Run documents no rounding for worker pools' splits, only that instances go to revisions
    proportionally and that some revisions get none when there are too few
    (https://cloud.google.com/run/docs/configuring/services/manual-scaling). At n instances a share
    of p % is n·p/100 of them; rounded down, the worst case, it is one from n = ceil(100/p).
    """
    if not 0 < percent <= 100:
        raise ValueError(f"percent must be from 1 to 100, not {percent}")
    return math.ceil(100 / percent)


def split_floor(split: Mapping[str, int]) -> int:
    """The fewest instances that give every revision with a share of `split` one of them."""
    return max((instances_for_share(p) for p in split.values() if p > 0), default=1)


def step_floor(percent: int) -> int:
    """`split_floor` of a release step: the candidate at `percent`, the stable revision the rest."""
    return split_floor({"candidate": percent, "stable": 100 - percent})


def decide(demand: Demand, pool: PoolState, policy: ScalePolicy) -> Decision:
    """The instance count for this demand.

    Up at once: work needs ceil(work / concurrency) instances, at least one, and at least what
    gives each revision of the split its share, so a release's candidate runs jobs at its share
    from the first one. Down only to the floor, and only once nothing has been queued or running
    for the idle period: an instance stopped while jobs run gives them back to run again.
    """
    current = min(pool.instances, policy.max_instances)
    if demand.work == 0:
        idle = demand.idle_seconds is None or demand.idle_seconds >= policy.idle_seconds
        if idle:
            return Decision(policy.min_instances, "idle")
        return Decision(max(current, policy.min_instances), "cooling down")
    needed = math.ceil(demand.work / policy.concurrency)
    wanted = max(needed, split_floor(pool.split), policy.min_instances, 1)
    capped = min(wanted, policy.max_instances)
    reason = "queue" if capped == wanted else f"queue (capped at {policy.max_instances})"
    return Decision(max(capped, current), reason)
