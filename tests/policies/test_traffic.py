from __future__ import annotations

import pytest

from policies.common import SERVICE, WORKER_POOL
from policies.traffic import traffic_adds_up
from tests.policies.conftest import check

pytestmark = pytest.mark.policy

LATEST = "TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST"
PINNED = "TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION"


def test_valid_splits_pass():
    traffics = [{"type": PINNED, "revision": "api-abc", "percent": 90.0}, {"type": LATEST, "percent": 10.0}]
    assert check(traffic_adds_up, SERVICE, {"traffics": traffics}) == []
    splits = [{"type": "INSTANCE_SPLIT_ALLOCATION_TYPE_LATEST", "percent": 100}]
    assert check(traffic_adds_up, WORKER_POOL, {"instanceSplits": splits}) == []


def test_percents_must_sum_to_100():
    (message,) = check(traffic_adds_up, SERVICE, {"traffics": [{"type": LATEST, "percent": 90}]})
    assert message == "traffics: percents sum to 90, not 100"


def test_pinned_revisions_are_named():
    (message,) = check(traffic_adds_up, SERVICE, {"traffics": [{"type": PINNED, "percent": 100}]})
    assert "must name its revision" in message
    pool = {"instanceSplits": [{"type": "INSTANCE_SPLIT_ALLOCATION_TYPE_REVISION", "percent": 100}]}
    assert check(traffic_adds_up, WORKER_POOL, pool)


def test_fractional_percents_are_reported():
    assert check(
        traffic_adds_up,
        SERVICE,
        {"traffics": [{"type": LATEST, "percent": 99.5}, {"type": LATEST, "percent": 0.5}]},
    )


@pytest.mark.parametrize("props", [{}, {"traffics": None}, {"traffics": "x"}, {"traffics": [None]}])
def test_missing_properties_are_safe(props):
    check(traffic_adds_up, SERVICE, props)
