"""Staging and prod in one GCP project: every project-unique id is its stack's own, and every
metric, alert and uptime check watches its own stack's workloads and never the other's.

The renderings are applied to the control-plane model (tests/stacks/cloud.py), whose "unique-id"
rule refuses a create under an id the project already holds, from whichever stack.
"""

from __future__ import annotations

from typing import Any

import pytest

from stacks.settings import WorkloadNames
from tests.stacks.cloud import (
    ACCOUNT,
    JOB,
    POOL,
    REPOSITORY,
    SERVICE,
    UNIQUE_IDS,
    Cloud,
    Engine,
)
from tests.stacks.conftest import render_stack
from tools.render import Rendering

pytestmark = pytest.mark.unit

PROJECT = "acme-shared-000000"
STACKS = ("staging", "prod")
METRIC = "gcp:logging/metric:Metric"
POLICY = "gcp:monitoring/alertPolicy:AlertPolicy"
UPTIME = "gcp:monitoring/uptimeCheckConfig:UptimeCheckConfig"
CHANNEL = "gcp:monitoring/notificationChannel:NotificationChannel"
# The most characters each id may have (the sources are in UNIQUE_IDS and the components' rules).
LONGEST = {REPOSITORY: 63, ACCOUNT: 30, SERVICE: 49, POOL: 49, JOB: 63, METRIC: 100}


def shared(stack: str) -> Rendering:
    """The committed stack file, with its project set to the one both stacks share."""
    return render_stack(stack, {"gcp:project": PROJECT})


@pytest.fixture(scope="module")
def both() -> dict[str, Rendering]:
    return {stack: shared(stack) for stack in STACKS}


def other(stack: str) -> str:
    return next(s for s in STACKS if s != stack)


def up_in_turn(renderings: list[Rendering]) -> list[Any]:
    """Each rendering applied by its own engine (its own stack state) to one cloud: one project."""
    cloud = Cloud()
    return [Engine(cloud, project=PROJECT).up(rendering) for rendering in renderings]


def unique_ids(rendering: Rendering) -> dict[tuple[str, str | None, str | None, str], str]:
    engine = Engine(project=PROJECT)
    found = {}
    for resource in rendering.resources:
        key = engine.unique_id(resource)
        if key is not None:
            found[key] = resource.name
    return found


def test_staging_and_prod_deploy_side_by_side_in_one_project(both):
    results = up_in_turn([both["staging"], both["prod"]])
    assert [r.error for r in results] == [None, None]
    assert all(r.changes for r in results)


def test_a_fixed_repository_id_collides_across_stacks(monkeypatch):
    """The defect: one repository id for every stack, as `liftoff` was. The second stack's first
    deploy is refused with 409 by Artifact Registry."""
    monkeypatch.setattr(WorkloadNames, "repository", property(lambda self: "liftoff"))
    staging, prod = up_in_turn([shared("staging"), shared("prod")])
    assert staging.error is None
    assert prod.error is not None and prod.error.rule == "unique-id"
    assert prod.error.detail.startswith(
        "image-repository: Artifact Registry repository liftoff already exists in project acme-shared-000000"
    )
    assert "409 ALREADY_EXISTS" in str(prod.error)


def test_two_stacks_of_one_environment_collide_in_one_project():
    """The environment is what the prefix carries, so a project holds one stack per environment:
    a second `prod` stack there is refused at its first id, and creates nothing after it."""
    first, second = up_in_turn([shared("prod"), shared("prod")])
    assert first.error is None
    assert second.error is not None and second.error.rule == "unique-id"
    op, kind, _ = second.changes[-1]
    assert (op, kind in UNIQUE_IDS) == ("create", True), "the engine stops at the first refused step"


@pytest.mark.parametrize("stack", STACKS)
def test_every_project_unique_id_carries_its_stack(stack, both):
    ids = unique_ids(both[stack])
    kinds = {kind for kind, _, _, _ in ids}
    assert kinds == set(UNIQUE_IDS), "every kind of id the model knows is declared by the program"
    for (kind, project, _, name), resource in ids.items():
        assert project == PROJECT, resource
        assert name.startswith(f"liftoff-{stack}-") or name == f"liftoff-{stack}", resource
        assert len(name) <= LONGEST.get(kind, 255), resource
    assert not set(ids) & set(unique_ids(both[other(stack)]))


@pytest.mark.parametrize("stack", STACKS)
def test_display_names_carry_the_stack(stack, both):
    rendering = both[stack]
    named = rendering.of_type(CHANNEL) + rendering.of_type(POLICY) + rendering.of_type(UPTIME)
    assert len(named) == 8  # the channel, six policies (`Scaler failing` included), the uptime check
    for resource in named:
        assert resource.inputs["displayName"].startswith(f"liftoff-{stack}"), resource.name


def names(rendering: Rendering) -> dict[str, str]:
    """The workloads a stack's monitoring must watch: its API service, worker pool, the pool's
    scaler and the API host."""
    return {
        "service": rendering.one(SERVICE, "api-service").inputs["name"],
        "scaler": rendering.one(SERVICE, "scaler-service").inputs["name"],
        "pool": rendering.one(POOL).inputs["name"],
        "host": rendering.outputs["api_url"].removeprefix("https://").rstrip("/"),
    }


@pytest.mark.parametrize("stack", STACKS)
def test_every_metric_alert_and_uptime_check_watches_its_own_stack(stack, both):
    rendering, own, theirs = both[stack], names(both[stack]), names(both[other(stack)])
    assert own["host"] != theirs["host"]
    metrics = rendering.of_type(METRIC)
    assert len(metrics) == 2
    for metric in metrics:
        log_filter = metric.inputs["filter"]
        assert f'resource.labels.worker_pool_name="{own["pool"]}"' in log_filter, metric.name
        assert 'resource.labels.location="europe-west1"' in log_filter, metric.name
        assert theirs["pool"] not in log_filter, metric.name
    promql = {
        policy.name: policy.inputs["conditions"][0]["conditionPrometheusQueryLanguage"]["query"]
        for policy in rendering.of_type(POLICY)
        if "conditionPrometheusQueryLanguage" in policy.inputs["conditions"][0]
    }
    assert len(promql) == 5
    for name, query in promql.items():
        if "-api-" in name or "-scaler-" in name:
            watched, label = own["scaler" if "-scaler-" in name else "service"], "service_name"
        else:
            watched, label = own["pool"], "worker_pool_name"
        assert f'location="europe-west1",{label}="{watched}"' in query, name
        assert f"liftoff-{other(stack)}" not in query and f"liftoff_{other(stack)}" not in query, name
    uptime = rendering.one(UPTIME)
    assert uptime.inputs["monitoredResource"]["labels"] == {"host": own["host"], "project_id": PROJECT}
    failing = rendering.one(POLICY, "monitoring-uptime-failing").inputs["conditions"][0]
    check = uptime.outputs["uptimeCheckId"]
    assert f'metric.label.check_id="{check}"' in failing["conditionThreshold"]["filter"]
    assert check != both[other(stack)].one(UPTIME).outputs["uptimeCheckId"]


def test_upgrading_a_stack_replaces_its_repository_and_frees_the_old_id(monkeypatch):
    """What a stack deployed with the fixed `liftoff` repository sees on its first update after it:
    the repository is replaced (created under the stack's id, the old one deleted last), the
    image is pushed there, and the workloads get revisions that run it."""
    with monkeypatch.context() as patch:
        patch.setattr(WorkloadNames, "repository", property(lambda self: "liftoff"))
        before = shared("prod")
    engine = Engine(Cloud(), project=PROJECT)
    assert engine.up(before).error is None
    after = engine.up(shared("prod"))
    assert after.error is None, after.error
    assert ("replace", REPOSITORY, "image-repository") in after.changes
    held = {key[3] for key in engine.cloud.ids if key[0] == REPOSITORY}
    assert held == {"liftoff-prod"}
    assert ("update", SERVICE, "api-service") in after.changes
    assert ("update", POOL, "worker-pool") in after.changes
