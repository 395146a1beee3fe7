"""How many worker instances the queue needs: `decide` and the floors of an instance split."""

from __future__ import annotations

import math

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from app.scaler.policy import (
    Decision,
    Demand,
    PoolState,
    ScalePolicy,
    decide,
    instances_for_share,
    split_floor,
    step_floor,
)

pytestmark = pytest.mark.unit

POLICY = ScalePolicy(min_instances=0, max_instances=4, idle_seconds=300, concurrency=4)
SPLIT_10_90 = {"candidate": 10, "stable": 90}


def demand(queued: int = 0, running: int = 0, idle: float | None = None) -> Demand:
    return Demand(queued=queued, running=running, idle_seconds=idle)


def pool(instances: int, split: dict[str, int] | None = None) -> PoolState:
    return PoolState(instances=instances, split=split if split is not None else {"LATEST": 100})


# Nothing to do


@pytest.mark.parametrize("idle", [None, 300.0, 3_600.0])
@pytest.mark.parametrize("instances", [0, 1, 4])
def test_no_work_past_the_idle_period_goes_to_the_floor(idle, instances):
    assert decide(demand(idle=idle), pool(instances), POLICY) == Decision(0, "idle")


def test_the_floor_is_kept_when_idle():
    policy = ScalePolicy(min_instances=2, max_instances=4, idle_seconds=60, concurrency=4)
    assert decide(demand(idle=61), pool(4), policy).instances == 2
    assert decide(demand(idle=61), pool(0), policy).instances == 2


@pytest.mark.parametrize("instances", [0, 1, 3])
def test_no_work_within_the_idle_period_keeps_the_pool(instances):
    assert decide(demand(idle=299.9), pool(instances), POLICY) == Decision(instances, "cooling down")


def test_cooling_down_raises_a_pool_below_its_floor_and_lowers_one_above_its_ceiling():
    policy = ScalePolicy(min_instances=1, max_instances=3, idle_seconds=60, concurrency=4)
    assert decide(demand(idle=1), pool(0), policy).instances == 1
    assert decide(demand(idle=1), pool(7), policy).instances == 3


# Work


def test_a_job_at_zero_instances_starts_one():
    assert decide(demand(queued=1), pool(0), POLICY) == Decision(1, "queue")


def test_a_running_job_alone_keeps_one():
    assert decide(demand(running=1, idle=10_000), pool(0), POLICY).instances == 1


@pytest.mark.parametrize(
    ("queued", "running", "concurrency", "expected"),
    [(1, 0, 4, 1), (4, 0, 4, 1), (5, 0, 4, 2), (3, 5, 4, 2), (9, 0, 4, 3), (7, 0, 1, 7), (16, 0, 8, 2)],
)
def test_work_needs_ceil_of_work_over_concurrency(queued, running, concurrency, expected):
    policy = ScalePolicy(min_instances=0, max_instances=10, idle_seconds=60, concurrency=concurrency)
    assert decide(demand(queued, running), pool(0), policy).instances == expected
    assert expected == math.ceil((queued + running) / concurrency)


def test_work_beyond_the_ceiling_is_capped_at_it():
    decision = decide(demand(queued=100), pool(1), POLICY)
    assert decision == Decision(4, "queue (capped at 4)")


def test_work_never_scales_down():
    """An instance stopped while jobs run gives them back to run again: with work, no fewer."""
    assert decide(demand(queued=1), pool(3), POLICY) == Decision(3, "queue")
    assert decide(demand(running=1, idle=10_000), pool(4), POLICY).instances == 4


def test_work_on_a_pool_above_its_ceiling_goes_down_to_the_ceiling_only():
    assert decide(demand(queued=1), pool(9), POLICY).instances == 4


def test_work_starts_at_least_the_floor():
    policy = ScalePolicy(min_instances=3, max_instances=4, idle_seconds=60, concurrency=4)
    assert decide(demand(queued=1), pool(0), policy).instances == 3


# A release's split


def test_a_10_90_split_gets_ten_instances_when_work_arrives():
    policy = ScalePolicy(min_instances=0, max_instances=20, idle_seconds=60, concurrency=4)
    decision = decide(demand(queued=1), pool(0, SPLIT_10_90), policy)
    assert decision.instances == 10
    # Rounded down, the candidate's share of ten is one instance.
    assert math.floor(decision.instances * 10 / 100) == 1


def test_a_10_90_split_is_capped_at_the_ceiling():
    decision = decide(demand(queued=1), pool(0, SPLIT_10_90), POLICY)
    assert decision == Decision(4, "queue (capped at 4)")


def test_a_split_does_not_hold_instances_once_idle():
    assert decide(demand(idle=1_000), pool(10, SPLIT_10_90), POLICY).instances == 0


@pytest.mark.parametrize(("percent", "expected"), [(100, 1), (50, 2), (34, 3), (33, 4), (10, 10), (1, 100)])
def test_instances_for_share(percent, expected):
    assert instances_for_share(percent) == expected
    assert math.floor(expected * percent / 100) >= 1
    assert math.floor((expected - 1) * percent / 100) == 0


@pytest.mark.parametrize("percent", [0, -1, 101])
def test_a_share_out_of_range_is_refused(percent):
    with pytest.raises(ValueError, match="percent"):
        instances_for_share(percent)


def test_split_floor_ignores_revisions_without_a_share():
    assert split_floor({}) == 1
    assert split_floor({"LATEST": 100}) == 1
    assert split_floor({"old": 0, "new": 100}) == 1
    assert split_floor({"a": 25, "b": 25, "c": 50}) == 4


@pytest.mark.parametrize(("percent", "expected"), [(10, 10), (25, 4), (50, 2), (90, 10), (100, 1)])
def test_step_floor(percent, expected):
    assert step_floor(percent) == expected


@pytest.mark.parametrize(
    ("low", "high", "idle", "concurrency"),
    [(-1, 4, 60, 4), (5, 4, 60, 4), (0, 0, 60, 4), (0, 4, -1, 4), (0, 4, 60, 0)],
)
def test_a_policy_out_of_bounds_is_refused(low, high, idle, concurrency):
    with pytest.raises(ValueError):
        ScalePolicy(min_instances=low, max_instances=high, idle_seconds=idle, concurrency=concurrency)


# Properties


@st.composite
def splits(draw: st.DrawFn) -> dict[str, int]:
    """An instance split as Cloud Run takes one: positive shares (and maybe zeros) summing to 100."""
    cuts = sorted(draw(st.sets(st.integers(1, 99), max_size=4)))
    shares = [b - a for a, b in zip([0, *cuts], [*cuts, 100], strict=True)]
    zeros = draw(st.integers(0, 2))
    return {f"rev-{i}": p for i, p in enumerate([*shares, *([0] * zeros)])}


@st.composite
def policies(draw: st.DrawFn) -> ScalePolicy:
    high = draw(st.integers(1, 100))
    return ScalePolicy(
        min_instances=draw(st.integers(0, high)),
        max_instances=high,
        idle_seconds=draw(st.floats(0, 3_600)),
        concurrency=draw(st.integers(1, 256)),
    )


demands = st.builds(
    Demand,
    queued=st.integers(0, 10_000),
    running=st.integers(0, 1_000),
    idle_seconds=st.none() | st.floats(0, 100_000),
)


@given(demands, st.integers(0, 200), splits(), policies())
def test_the_count_is_always_within_the_bounds(
    d: Demand, instances: int, split: dict[str, int], p: ScalePolicy
):
    assert p.min_instances <= decide(d, PoolState(instances, split), p).instances <= p.max_instances


@given(demands, st.integers(0, 200), splits(), policies())
def test_with_work_and_room_every_share_gets_an_instance(
    d: Demand, instances: int, split: dict[str, int], p: ScalePolicy
):
    assume(d.work > 0 and p.max_instances >= split_floor(split))
    n = decide(d, PoolState(instances, split), p).instances
    assert n >= math.ceil(d.work / p.concurrency) or n == p.max_instances
    for percent in split.values():
        if percent > 0:
            assert math.floor(n * percent / 100) >= 1, (n, percent)


@given(demands, st.integers(0, 200), splits(), policies())
def test_work_never_lowers_a_pool_within_its_ceiling(
    d: Demand, instances: int, split: dict[str, int], p: ScalePolicy
):
    assume(d.work > 0)
    assert decide(d, PoolState(instances, split), p).instances >= min(instances, p.max_instances)
