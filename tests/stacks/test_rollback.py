"""Rollback by traffic split: the update touches only the traffic of the API service."""

from __future__ import annotations

from typing import Any

import pytest

from tests.stacks.conftest import render_stack
from tools.render import Rendering, stack_config

pytestmark = pytest.mark.unit


def release(tag: str, traffic: list[dict[str, Any]]) -> Rendering:
    api = {**stack_config("prod")["liftoff:api"], "traffic": traffic}
    return render_stack("prod", {"liftoff:imageTag": tag, "liftoff:api": api})


def changes(before: Rendering, after: Rendering) -> dict[tuple[str, str], set[str]]:
    """Per resource, the input keys whose values differ (and added or removed resources)."""
    old = {(r.type, r.name): r.inputs for r in before.resources}
    new = {(r.type, r.name): r.inputs for r in after.resources}
    diff: dict[tuple[str, str], set[str]] = {}
    for key in old.keys() | new.keys():
        if key not in old or key not in new:
            diff[key] = {"<added>" if key in new else "<removed>"}
            continue
        keys = {k for k in old[key].keys() | new[key].keys() if old[key].get(k) != new[key].get(k)}
        if keys:
            diff[key] = keys
    return diff


def test_release_then_rollback_touches_only_api_traffic():
    first = release("v1", [{"revision": "latest", "percent": 100}])
    stable = first.outputs["api_revision"]

    # A new image ships as a new revision at 0 %, under a tag, while the stable one serves.
    canary = release(
        "v2",
        [
            {"revision": stable, "percent": 100, "tag": "stable"},
            {"revision": "latest", "percent": 0, "tag": "candidate"},
        ],
    )
    candidate = canary.outputs["api_revision"]
    assert candidate != stable
    assert canary.outputs["api_candidate_urls"]["candidate"].startswith("https://candidate---")

    # Promoted in a later update: only the traffic moves.
    promoted = release("v2", [{"revision": "latest", "percent": 100, "tag": "candidate"}])
    assert changes(canary, promoted) == {("gcp:cloudrunv2/service:Service", "api-service"): {"traffics"}}

    # Rolled back: 100 % to the stable revision, by name. Still only the traffic.
    rolled_back = release("v2", [{"revision": stable, "percent": 100}])
    assert changes(promoted, rolled_back) == {("gcp:cloudrunv2/service:Service", "api-service"): {"traffics"}}
    service = rolled_back.one("gcp:cloudrunv2/service:Service", "api-service").inputs
    assert service["traffics"] == [
        {"type": "TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION", "revision": stable, "percent": 100}
    ]
    # No new revision: the template still names the candidate, which simply gets no traffic.
    assert service["template"]["revision"] == candidate
    assert rolled_back.outputs["api_revision"] == candidate


def test_a_new_image_changes_revisions_and_runs_migrations():
    v1 = release("v1", [{"revision": "latest", "percent": 100}])
    v2 = release("v2", [{"revision": "latest", "percent": 100}])
    changed = changes(v1, v2)
    assert "tags" in changed[("docker-build:index:Image", "image-image")]
    assert "template" in changed[("gcp:cloudrunv2/service:Service", "api-service")]
    assert "template" in changed[("gcp:cloudrunv2/workerPool:WorkerPool", "worker-pool")]
    assert "trigger" in changed[("pulumi-python:dynamic/liftoff:JobRun", "migrations-run")]
    assert changed[("gcp:cloudrunv2/job:Job", "migrations-job")] == {"template"}
    assert v1.outputs["api_revision"] != v2.outputs["api_revision"]


def test_a_config_change_gets_a_fresh_revision_name():
    base = release("v1", [{"revision": "latest", "percent": 100}])
    api = {**stack_config("prod")["liftoff:api"], "memory": "2Gi"}
    bigger = render_stack("prod", {"liftoff:imageTag": "v1", "liftoff:api": api})
    # Same image, different template: Cloud Run would answer 409 to a reused name.
    assert bigger.outputs["api_revision"] != base.outputs["api_revision"]
    assert bigger.outputs["api_revision"].split("-")[3] == base.outputs["api_revision"].split("-")[3]
