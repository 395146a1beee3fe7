"""The workloads under release management: what serves, and what an update may change."""

from __future__ import annotations

from typing import Any

import pytest
from pulumi_gcp.cloudrunv2 import outputs

from components.cloudrun import ApiServiceArgs, Container, WorkerPoolArgs, serving
from components.traffic import TrafficTarget

pytestmark = pytest.mark.unit

LATEST = "TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST"
PINNED = "TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION"
READY = "projects/p/locations/europe-west1/services/liftoff-prod-api/revisions/liftoff-prod-api-bbb"


def container() -> Container:
    return Container(image="registry/app@sha256:1", image_digest="sha256:1", service_account="sa@p")


def test_serving_reads_the_statuses_not_the_declared_split():
    statuses: list[Any] = [
        {"type": PINNED, "revision": "liftoff-prod-api-aaa", "percent": 90, "tag": "stable"},
        {"type": PINNED, "revision": "liftoff-prod-api-bbb", "percent": 10, "tag": "candidate"},
    ]
    assert serving(statuses, READY) == {"liftoff-prod-api-aaa": 90, "liftoff-prod-api-bbb": 10}


def test_serving_resolves_latest_and_leaves_out_what_takes_nothing():
    statuses: list[Any] = [
        {"type": PINNED, "revision": "liftoff-prod-api-aaa", "percent": 0, "tag": "stable"},
        {"type": LATEST, "percent": 100, "tag": "candidate"},
    ]
    # A LATEST entry without a name is the latest ready revision, given by its short name.
    assert serving(statuses, READY) == {"liftoff-prod-api-bbb": 100}


def test_serving_takes_the_sdks_output_types():
    statuses = [
        outputs.ServiceTrafficStatus(type=PINNED, revision="liftoff-prod-api-aaa", percent=60),
        outputs.ServiceTrafficStatus(type=PINNED, revision="liftoff-prod-api-aaa", percent=40),
    ]
    assert serving(statuses, None) == {"liftoff-prod-api-aaa": 100}
    splits = [
        outputs.WorkerPoolInstanceSplitStatus(type="INSTANCE_SPLIT_ALLOCATION_TYPE_LATEST", percent=100)
    ]
    assert serving(splits, "liftoff-prod-worker-ccc") == {"liftoff-prod-worker-ccc": 100}


@pytest.mark.parametrize("statuses", [None, []])
def test_serving_before_anything_serves_is_empty(statuses):
    assert serving(statuses, None) == {}


def test_a_traffic_only_update_must_declare_the_traffic():
    with pytest.raises(ValueError, match="traffic_only"):
        ApiServiceArgs(
            service_name="liftoff-prod-api",
            region="europe-west1",
            project="p",
            container=container(),
            traffic=None,
            traffic_only=True,
        )
    with pytest.raises(ValueError, match="traffic_only"):
        WorkerPoolArgs(
            pool_name="liftoff-prod-worker",
            region="europe-west1",
            project="p",
            container=container(),
            split=None,
            traffic_only=True,
        )


def test_managed_traffic_skips_split_validation_but_a_declared_one_is_checked():
    ApiServiceArgs(
        service_name="liftoff-prod-api", region="r", project="p", container=container(), traffic=None
    )
    WorkerPoolArgs(
        pool_name="liftoff-prod-worker", region="r", project="p", container=container(), split=None
    )
    with pytest.raises(ValueError, match="percents sum to 90"):
        WorkerPoolArgs(
            pool_name="liftoff-prod-worker",
            region="r",
            project="p",
            container=container(),
            split=(TrafficTarget(percent=90),),
            traffic_only=True,
        )
