"""Release-managed traffic: declared once, moved only by release plans, rolled back traffic-only.

The renderings are the real program's; the sequences are applied to the control-plane model
(tests/stacks/cloud.py), which keeps ignored inputs and honours --target as the engine does.
"""

from __future__ import annotations

from typing import Any

import pulumi
import pytest
from pulumi_gcp import cloudrunv2 as run
from pulumi_gcp import secretmanager

from components.ledger import ReleaseLedger
from release.automation import TRAFFIC_RESOURCES
from stacks.ledger import Ledger, Outcome, Release
from stacks.release_plan import ReleasePlan, settle, ship, step
from tests.stacks.cloud import JOB_RUN, LEDGER, POOL, SECRET, SERVICE, Cloud, Engine, Up
from tests.stacks.conftest import render_stack
from tools.render import Rendering, render, stack_config

pytestmark = pytest.mark.unit

API = "liftoff-prod-api"
WORKER = "liftoff-prod-worker"
IMAGE = "docker-build:index:Image"
AT = "2026-11-24T07:00:00Z"


def prod(image: str, release: ReleasePlan | None = None, **overrides: Any) -> Rendering:
    config: dict[str, Any] = {"liftoff:imageTag": image}
    for section, values in overrides.items():
        config[f"liftoff:{section}"] = {**stack_config("prod").get(f"liftoff:{section}", {}), **values}
    return render_stack("prod", config, release=release)


def shipped(rendering: Rendering) -> Release:
    return Release(api=rendering.outputs["api_revision"], worker=rendering.outputs["worker_revision"])


def traffic_targets(rendering: Rendering) -> list[str]:
    """The URNs a traffic-only update targets: the service, the pool and the ledger."""
    return [rendering.one(kind, name).urn for kind, name in TRAFFIC_RESOURCES]


def applied(engine: Engine, rendering: Rendering, targets: list[str] | None = None) -> Up:
    result = engine.up(rendering, targets)
    assert result.error is None, result.error
    return result


@pytest.fixture
def engine() -> Engine:
    return Engine(Cloud())


def test_managed_traffic_is_created_on_latest_and_ignored_afterwards(prod: Rendering):
    service, pool, ledger = (prod.one(kind, name) for kind, name in TRAFFIC_RESOURCES)
    assert service.inputs["traffics"] == [
        {"type": "TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST", "percent": 100, "tag": "candidate"}
    ]
    assert service.ignore_changes == {"traffics"}
    assert pool.inputs["instanceSplits"] == [
        {"type": "INSTANCE_SPLIT_ALLOCATION_TYPE_LATEST", "percent": 100}
    ]
    # The SDK sends the engine's name: the Python name `instance_splits` would ignore nothing.
    # `scaling` is the scaler's (the pool runs on demand), in every update.
    assert pool.ignore_changes == {"instanceSplits", "scaling"}
    assert ledger.type == ReleaseLedger.TYPE
    assert ledger.inputs == {"entries": "[]"}
    assert ledger.ignore_changes == {"entries"}
    # Nothing else is left to releases.
    assert {r.name for r in prod.resources if r.ignore_changes} == {
        "api-service",
        "worker-pool",
        "release-ledger",
    }


def test_a_pin_in_the_stack_file_is_declared_and_not_ignored():
    first = prod("v1")
    revision = first.outputs["api_revision"]
    pinned = prod("v1", api={"traffic": [{"revision": revision, "percent": 100}]})
    service = pinned.one(SERVICE, "api-service")
    assert service.inputs["traffics"] == [
        {"type": "TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION", "revision": revision, "percent": 100}
    ]
    assert service.ignore_changes == frozenset()
    assert pinned.outputs["api_traffic"] == [{"revision": revision, "percent": 100}]
    split_managed = pinned.one(POOL).ignore_changes == {"instanceSplits", "scaling"}
    assert split_managed, "the worker split is still managed"


def test_a_release_plan_declares_the_traffic_and_writes_the_ledger():
    v1 = shipped(prod("v1"))
    ledger = Ledger().record(v1, Outcome.PROMOTED, AT)
    rendering = prod("v2", release=ship(v1, ledger))
    service, pool, written = (rendering.one(kind, name) for kind, name in TRAFFIC_RESOURCES)
    assert service.inputs["traffics"] == [
        {
            "type": "TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION",
            "revision": v1.api,
            "percent": 100,
            "tag": "stable",
        },
        {"type": "TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST", "percent": 0, "tag": "candidate"},
    ]
    assert pool.inputs["instanceSplits"] == [
        {"type": "INSTANCE_SPLIT_ALLOCATION_TYPE_REVISION", "revision": v1.worker, "percent": 100},
        {"type": "INSTANCE_SPLIT_ALLOCATION_TYPE_LATEST", "percent": 0},
    ]
    assert service.ignore_changes == written.ignore_changes == frozenset()
    assert pool.ignore_changes == {"scaling"}, "the scaler's count, whatever the release declares"
    assert written.inputs == {"entries": ledger.dumps()}
    assert Ledger.from_json(rendering.outputs["release_ledger"]) == ledger
    # What serves right after this update: the stable revision only; the candidate has a tag URL.
    assert rendering.outputs["api_serving"] == {v1.api: 100}
    assert set(rendering.outputs["api_candidate_urls"]) == {"candidate"}


def test_a_traffic_only_plan_ignores_every_other_input():
    v1 = shipped(prod("v1"))
    rendering = prod("v1", release=settle(v1, Ledger().record(v1, Outcome.PROMOTED, AT)))
    service, pool = rendering.one(SERVICE, "api-service"), rendering.one(POOL)
    assert "traffics" not in service.ignore_changes
    assert {
        "template",
        "labels",
        "customAudiences",
        "deletionProtection",
        "ingress",
    } <= service.ignore_changes
    assert set(service.inputs) - service.ignore_changes == {"traffics"}
    assert "instanceSplits" not in pool.ignore_changes
    assert {"template", "scaling", "labels"} <= pool.ignore_changes
    assert set(pool.inputs) - pool.ignore_changes == {"instanceSplits"}
    # Every input the SDK defines, under the engine's names, so one added later is covered too.
    assert (
        len(service.ignore_changes)
        == len([p for p in vars(run.ServiceArgs).values() if isinstance(p, property)]) - 1
    )


def _first_release(engine: Engine) -> tuple[Release, Ledger]:
    """The first deploy, shipped by a release, promoted, and pinned by name."""
    first = prod("v1", release=ship(None, Ledger()))
    applied(engine, first)
    v1 = shipped(first)
    ledger = Ledger().record(v1, Outcome.PROMOTED, AT)
    settled = prod("v1", release=settle(v1, ledger))
    applied(engine, settled, traffic_targets(settled))
    assert engine.cloud.serving(API) == {v1.api: 100}
    assert engine.cloud.serving(WORKER) == {v1.worker: 100}
    return v1, ledger


def test_a_plain_up_after_a_release_keeps_the_traffic_and_the_ledger(engine):
    v1, ledger = _first_release(engine)
    plain = prod("v2")
    result = applied(engine, plain)
    v2 = shipped(plain)
    # The new revisions exist, at 0 %: nothing moved the traffic off the pinned release.
    assert v2.api in engine.cloud.workloads[API].revisions
    assert v2.worker in engine.cloud.workloads[WORKER].revisions
    assert engine.cloud.serving(API) == {v1.api: 100}
    assert engine.cloud.serving(WORKER) == {v1.worker: 100}
    assert "traffics" not in result.diffs[(SERVICE, "api-service")]
    assert "instanceSplits" not in result.diffs[(POOL, "worker-pool")]
    # The ledger the release wrote is what the state still holds.
    assert ("update", LEDGER, "release-ledger") not in result.changes
    assert engine.ledger() == ledger.to_json()


def _canary(engine: Engine) -> tuple[Release, Release, Ledger]:
    """v1 serving, v2 shipped at 0 % and then taking 10 % of the API and of the workers."""
    v1, ledger = _first_release(engine)
    candidate = prod("v2", release=ship(v1, ledger))
    applied(engine, candidate)
    v2 = shipped(candidate)
    assert engine.cloud.serving(API) == {v1.api: 100}
    ledger = ledger.record(v2, Outcome.CANARY, AT)
    ten = prod("v2", release=step(v1, v2, 10, ledger))
    applied(engine, ten, traffic_targets(ten))
    assert engine.cloud.serving(API) == {v1.api: 90, v2.api: 10}
    assert engine.cloud.serving(WORKER) == {v1.worker: 90, v2.worker: 10}
    return v1, v2, ledger


def _rollback_from_another_checkout(v1: Release, v2: Release, ledger: Ledger) -> Rendering:
    """The rollback's plan, rendered where the checkout holds another image and other settings."""
    plan = settle(v1, ledger.record(v2, Outcome.ROLLED_BACK, AT, "error-ratio"))
    return prod("v3", release=plan, api={"memory": "2Gi"}, worker={"memory": "2Gi", "maxInstances": 12})


def test_the_rollback_plan_changes_only_traffic_and_the_ledger(engine):
    v1, v2, ledger = _canary(engine)
    revisions = {name: set(engine.cloud.workloads[name].revisions) for name in (API, WORKER)}
    executions = len(engine.cloud.executions["liftoff-prod-migrate"])
    rollback = _rollback_from_another_checkout(v1, v2, ledger)
    assert shipped(rollback).api not in revisions[API], "the checkout would ship another revision"

    result = applied(engine, rollback, traffic_targets(rollback))

    assert sorted(result.changes) == sorted(
        [
            ("update", LEDGER, "release-ledger"),
            ("update", POOL, "worker-pool"),
            ("update", SERVICE, "api-service"),
        ]
    )
    assert result.diffs == {
        (SERVICE, "api-service"): {"traffics"},
        (POOL, "worker-pool"): {"instanceSplits"},
        (LEDGER, "release-ledger"): {"entries"},
    }
    assert not [s for s in result.steps if s[1] in (IMAGE, JOB_RUN)], "no image build, no migrations"
    assert len(engine.cloud.executions["liftoff-prod-migrate"]) == executions
    assert {name: set(engine.cloud.workloads[name].revisions) for name in (API, WORKER)} == revisions
    assert engine.cloud.serving(API) == {v1.api: 100}
    assert engine.cloud.serving(WORKER) == {v1.worker: 100}
    assert Ledger.from_json(engine.ledger()).outcome(v2) is Outcome.ROLLED_BACK
    assert Ledger.from_json(engine.ledger()).bad_revisions() == {v2.api, v2.worker}


def test_without_targets_the_checkout_would_run_its_migrations(engine):
    """Why a traffic-only update is also a targeted one: ignore_changes cannot stop the rest."""
    v1, v2, ledger = _canary(engine)
    result = applied(engine, _rollback_from_another_checkout(v1, v2, ledger))
    assert ("update", JOB_RUN, "migrations-run") in result.changes
    assert ("update", IMAGE, "image-image") in result.changes
    # The workloads themselves still only move their traffic.
    assert result.diffs[(SERVICE, "api-service")] == {"traffics"}
    assert result.diffs[(POOL, "worker-pool")] == {"instanceSplits"}


# --- The model's engine rules on a small program of its own --------------------------------------


def _secrets(names: list[str], label: str, ignore: list[str] | None = None) -> Rendering:
    def program() -> dict[str, Any]:
        for name in names:
            secretmanager.Secret(
                name,
                secretmanager.SecretArgs(
                    secret_id=name,
                    labels={"v": label},
                    replication=secretmanager.SecretReplicationArgs(
                        auto=secretmanager.SecretReplicationAutoArgs()
                    ),
                ),
                opts=pulumi.ResourceOptions(ignore_changes=ignore),
            )
        return {}

    return render("prod", {}, {}, program=program)


def test_the_model_keeps_ignored_inputs_on_update_only(engine):
    applied(engine, _secrets(["a"], "1", ignore=["labels"]))
    assert engine.state[engine.urn(SECRET, "a")].inputs["labels"] == {"v": "1"}, "used as given on create"
    again = applied(engine, _secrets(["a"], "2", ignore=["labels"]))
    assert again.changes == []
    assert engine.state[engine.urn(SECRET, "a")].inputs["labels"] == {"v": "1"}
    unignored = applied(engine, _secrets(["a"], "2"))
    assert unignored.diffs == {(SECRET, "a"): {"labels"}}


def test_the_model_touches_only_targets(engine):
    applied(engine, _secrets(["a", "b"], "1"))
    a, b = engine.urn(SECRET, "a"), engine.urn(SECRET, "b")
    more = applied(engine, _secrets(["a", "b", "c"], "2"), targets=[a])
    assert more.changes == [("update", SECRET, "a")]
    assert engine.state[b].inputs["labels"] == {"v": "1"}
    assert {r.name for r in engine.state.values()} == {"a", "b"}, "an untargeted resource is not created"
    fewer = applied(engine, _secrets(["a"], "2"), targets=[a])
    assert fewer.changes == []
    assert b in engine.state, "an untargeted resource is not deleted"


def test_a_traffic_only_update_waits_for_nothing_it_does_not_run():
    """A checkout that adds a prerequisite (a secret grant) must not tie the rollback to it."""
    stable = Release(f"{API}-aaaaaaaa-1111111", f"{WORKER}-aaaaaaaa-1111111")
    ledger = Ledger().record(stable, Outcome.PROMOTED, AT)
    shipping, moving = prod("v2", release=ship(stable, ledger)), prod("v2", release=settle(stable, ledger))
    for kind, name in ((SERVICE, "api-service"), (POOL, "worker-pool")):
        run_urn = shipping.one(JOB_RUN).urn
        assert run_urn in shipping.one(kind, name).dependencies  # a new revision waits for migrations
        assert run_urn not in moving.one(kind, name).dependencies  # a traffic move does not
        grants = {r.urn for r in moving.of_type("gcp:secretmanager/secretIamMember:SecretIamMember")}
        assert not grants & moving.one(kind, name).dependencies
