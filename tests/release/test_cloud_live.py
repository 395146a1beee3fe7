"""What serves, read from a double of the Cloud Run Admin API v2 (services.get, workerPools.get)."""

from __future__ import annotations

from typing import Any

import pytest

from components.rest import ApiError, RestClient
from release.cloud import CloudRunLive, Site, Tagged, serving, tag_url
from stacks.ledger import Ledger, Outcome, Release
from stacks.settings import WorkloadNames
from tests.http_double import Reply, Request, google_error

pytestmark = pytest.mark.unit

SITE = Site("liftoff-prod-000000", "europe-west1", WorkloadNames.of("prod"))
PARENT = f"projects/{SITE.project}/locations/{SITE.region}"
HOST = "liftoff-prod-api-3kq7xw2mba-ew.a.run.app"
LATEST = "TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST"
BY_NAME = "TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION"


def service(statuses: list[dict[str, Any]], latest_ready: str = "liftoff-prod-api-b") -> dict[str, Any]:
    """A Service as services.get returns it: resource names for revisions, statuses per target.

    https://cloud.google.com/run/docs/reference/rest/v2/projects.locations.services#Service
    """
    return {
        "name": f"{PARENT}/services/liftoff-prod-api",
        "uri": f"https://{HOST}",
        "latestCreatedRevision": f"{PARENT}/services/liftoff-prod-api/revisions/liftoff-prod-api-c",
        "latestReadyRevision": f"{PARENT}/services/liftoff-prod-api/revisions/{latest_ready}",
        "trafficStatuses": statuses,
    }


def pool(statuses: list[dict[str, Any]]) -> dict[str, Any]:
    """A WorkerPool as workerPools.get returns it.

    https://cloud.google.com/run/docs/reference/rest/v2/projects.locations.workerPools#WorkerPool
    """
    return {
        "name": f"{PARENT}/workerPools/liftoff-prod-worker",
        "latestReadyRevision": f"{PARENT}/workerPools/liftoff-prod-worker/revisions/liftoff-prod-worker-b",
        "instanceSplitStatuses": statuses,
    }


CANARY = service(
    [
        {
            "type": BY_NAME,
            "revision": "liftoff-prod-api-a",
            "percent": 90,
            "tag": "stable",
            "uri": f"https://stable---{HOST}",
        },
        {"type": LATEST, "percent": 10, "tag": "candidate", "uri": f"https://candidate---{HOST}"},
    ]
)
SPLIT = pool(
    [
        {
            "type": "INSTANCE_SPLIT_ALLOCATION_TYPE_REVISION",
            "revision": "liftoff-prod-worker-a",
            "percent": 90,
        },
        {"type": "INSTANCE_SPLIT_ALLOCATION_TYPE_LATEST", "percent": 10},
    ]
)
LEDGER = Ledger().record(
    Release("liftoff-prod-api-a", "liftoff-prod-worker-a"), Outcome.PROMOTED, "2026-11-20"
)


def cloud_run(resources: dict[str, dict[str, Any]]):
    """services.get and workerPools.get; 404 NOT_FOUND for anything else, as the API answers."""

    def handle(request: Request) -> Reply:
        assert request.method == "GET"
        assert request.headers.get("authorization") == "Bearer token"
        name = request.path.removeprefix("/v2/")
        if name in resources:
            return Reply(200, resources[name])
        return google_error(404, "NOT_FOUND", f"Resource '{name}' was not found")

    return handle


def live(url: str, outputs: dict[str, Any] | None = None) -> CloudRunLive:
    client = RestClient(url, lambda: "token", attempts=1)
    return CloudRunLive(client, SITE, lambda: outputs or {})


def test_reads_the_serving_revisions_with_latest_resolved(serve):
    served = serve(
        cloud_run(
            {
                f"{PARENT}/services/liftoff-prod-api": CANARY,
                f"{PARENT}/workerPools/liftoff-prod-worker": SPLIT,
            }
        )
    )
    found = live(served.url, {"release_ledger": LEDGER.to_json()}).read()
    assert dict(found.api) == {"liftoff-prod-api-a": 90, "liftoff-prod-api-b": 10}
    assert dict(found.worker) == {"liftoff-prod-worker-a": 90, "liftoff-prod-worker-b": 10}
    assert found.ledger == LEDGER
    assert [r.path for r in served.requests] == [
        f"/v2/{PARENT}/services/liftoff-prod-api",
        f"/v2/{PARENT}/workerPools/liftoff-prod-worker",
    ]


def test_a_revision_at_zero_percent_does_not_serve():
    # proto3 JSON leaves the 0 out: the candidate shipped at 0 % has no percent at all.
    shipped = service(
        [
            {"type": BY_NAME, "revision": "liftoff-prod-api-a", "percent": 100, "tag": "stable"},
            {"type": LATEST, "tag": "candidate"},
        ]
    )
    assert serving(shipped, "trafficStatuses") == {"liftoff-prod-api-a": 100}


def test_two_targets_on_one_revision_add_up():
    settled = service(
        [
            {"type": BY_NAME, "revision": "liftoff-prod-api-b", "percent": 100, "tag": "stable"},
            {"type": LATEST, "percent": 0, "tag": "candidate"},
        ]
    )
    assert serving(settled, "trafficStatuses") == {"liftoff-prod-api-b": 100}
    both = service(
        [{"type": BY_NAME, "revision": "liftoff-prod-api-b", "percent": 50}, {"type": LATEST, "percent": 50}]
    )
    assert serving(both, "trafficStatuses") == {"liftoff-prod-api-b": 100}


def test_latest_with_nothing_ready_serves_nothing():
    broken = {"trafficStatuses": [{"type": LATEST, "percent": 100}]}
    assert serving(broken, "trafficStatuses") == {}


def test_before_the_first_deploy_nothing_serves(serve):
    served = serve(cloud_run({}))
    found = live(served.url).read()
    assert (dict(found.api), dict(found.worker), found.ledger) == ({}, {}, Ledger())


def test_other_errors_are_not_taken_for_absence(serve):
    served = serve(lambda request: google_error(403, "PERMISSION_DENIED", "run.services.get denied"))
    with pytest.raises(ApiError, match="403"):
        live(served.url).read()


def test_the_candidate_tag_is_located_on_the_live_service(serve):
    served = serve(cloud_run({f"{PARENT}/services/liftoff-prod-api": CANARY}))
    reader = live(served.url)
    assert reader.tagged("candidate") == Tagged("liftoff-prod-api-b", f"https://candidate---{HOST}")
    assert reader.tagged("stable") == Tagged("liftoff-prod-api-a", f"https://stable---{HOST}")
    assert reader.tagged("nope") is None


def test_a_tag_without_its_uri_gets_the_documented_form(serve):
    # Statuses are filled in as the service reconciles: the URL is then derived from the service's.
    bare = service([{"type": LATEST, "percent": 100, "tag": "candidate"}])
    served = serve(cloud_run({f"{PARENT}/services/liftoff-prod-api": bare}))
    assert live(served.url).tagged("candidate") == Tagged("liftoff-prod-api-b", f"https://candidate---{HOST}")


def test_no_service_no_tag(serve):
    served = serve(cloud_run({}))
    assert live(served.url).tagged("candidate") is None


def test_tag_url():
    assert tag_url(f"https://{HOST}", "candidate") == f"https://candidate---{HOST}"
    with pytest.raises(ValueError, match="not a service URL"):
        tag_url("", "candidate")
