"""Sequences of `pulumi up` applied to the control-plane model (tests/stacks/cloud.py).

Each test renders the real program once per update, as `pulumi up` would run it, and applies the
renderings in turn. Where a rule protects against a real defect, a variant of the program that
has the defect shows the model refusing it, so the rule is known to bite.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pulumi
import pytest
from pulumi_gcp import cloudrunv2 as run
from pulumi_gcp import secretmanager

import components.cloudrun
import components.secrets
from components.jobrun import PROPAGATION_SECONDS
from components.propagation import TYPICAL_SECONDS, GrantPropagation
from tests.stacks.cloud import (
    JOB,
    JOB_RUN,
    POOL,
    PROPAGATION,
    SECRET_VERSION,
    SERVICE,
    Cloud,
    CloudError,
    Engine,
    Iam,
)
from tests.stacks.conftest import SECRETS, render_stack
from tools.render import Rendering, render, stack_config

pytestmark = pytest.mark.unit

API = "liftoff-prod-api"
WORKER = "liftoff-prod-worker"


def prod(image: str = "v1", secrets: dict[str, str] | None = None, **overrides: Any) -> Rendering:
    config: dict[str, Any] = {"liftoff:imageTag": image}
    for section, values in overrides.items():
        config[f"liftoff:{section}"] = {**stack_config("prod").get(f"liftoff:{section}", {}), **values}
    return render_stack("prod", config, {**SECRETS, **(secrets or {})})


def pinned(revision: str) -> list[dict[str, Any]]:
    return [{"revision": revision, "percent": 100}]


@pytest.fixture
def engine() -> Engine:
    return Engine(Cloud())


def deployed(engine: Engine, rendering: Rendering) -> Rendering:
    result = engine.up(rendering)
    assert result.error is None, result.error
    return rendering


def test_first_deploy_then_an_unchanged_up_changes_nothing(engine):
    first = deployed(engine, prod())
    assert engine.cloud.serving(API) == {first.outputs["api_revision"]: 100}
    assert engine.cloud.serving(WORKER) == {first.outputs["worker_revision"]: 100}
    # Migrations ran once, before any revision existed.
    execution = engine.last_execution("liftoff-prod-migrate")
    assert execution is not None and execution.succeeded
    again = engine.up(prod())
    assert again.error is None
    assert again.changes == []


def test_workloads_wait_for_their_secret_grants(engine, monkeypatch):
    """Without the grants as dependencies, a workload can be created before its access exists."""

    def options_without_grants(self: components.cloudrun.Container, parent: Any) -> Any:
        return pulumi.ResourceOptions(parent=parent, depends_on=list(self.after))

    monkeypatch.setattr(components.cloudrun.Container, "options", options_without_grants)
    result = engine.up(prod())
    assert result.error is not None and result.error.rule == "secret-access"


def _slower_startup_probe(original: Any) -> Any:
    def template(args: Any, revision: Any) -> run.ServiceTemplateArgs:
        built: run.ServiceTemplateArgs = original(args, revision)
        container: Any = built.containers[0]  # type: ignore[index]
        pulumi.set(container.startup_probe, "period_seconds", 5)
        return built

    return template


def test_a_probe_only_change_ships_a_new_revision(engine, monkeypatch):
    before = deployed(engine, prod())
    monkeypatch.setattr(
        components.cloudrun, "_service_template", _slower_startup_probe(components.cloudrun._service_template)
    )
    after = engine.up(prod())
    assert after.error is None, after.error
    assert ("update", SERVICE, "api-service") in after.changes
    new = engine.cloud.workloads[API].latest
    assert new != before.outputs["api_revision"]
    assert engine.cloud.serving(API) == {new: 100}


def test_a_name_that_ignores_the_probe_is_refused(engine, monkeypatch):
    """The defect this guards against: names derived from part of the template are reused."""
    original = components.cloudrun.revision_of

    def name_without_probes(service: str, digest: Any, template: Any) -> Any:
        return original(service, digest, {"image": digest})

    monkeypatch.setattr(components.cloudrun, "revision_of", name_without_probes)
    deployed(engine, prod())
    monkeypatch.setattr(
        components.cloudrun, "_service_template", _slower_startup_probe(components.cloudrun._service_template)
    )
    result = engine.up(prod())
    assert result.error is not None and result.error.rule == "revision-name"


def fixed_pool(instances: int) -> Rendering:
    """Prod with a fixed worker count instead of its on-demand keys."""
    on_demand = ("minInstances", "maxInstances", "idleSeconds")
    worker = {k: v for k, v in stack_config("prod")["liftoff:worker"].items() if k not in on_demand}
    config = {"liftoff:imageTag": "v1", "liftoff:worker": {**worker, "instances": instances}}
    return render_stack("prod", config)


def test_scaling_a_fixed_worker_pool_keeps_its_revision(engine):
    first = deployed(engine, fixed_pool(4))
    scaled = engine.up(fixed_pool(5))
    assert scaled.error is None
    assert scaled.changes == [("update", POOL, "worker-pool")]
    pool = engine.cloud.workloads[WORKER]
    assert list(pool.revisions) == [first.outputs["worker_revision"]]


def _rotate_and_roll_back(engine: Engine) -> tuple[Rendering, CloudError | None]:
    first = deployed(engine, prod())
    stable = first.outputs["api_revision"]
    rotated = deployed(engine, prod(secrets={"liftoff:supabaseJwtSecret": "rotated-jwt-secret-value"}))
    old, new = (
        r.one(SECRET_VERSION, "secrets-liftoff-prod-supabase-jwt-secret-version") for r in (first, rotated)
    )
    assert old.outputs["version"] != new.outputs["version"], "the mock gives the new value a new version"
    assert rotated.outputs["api_revision"] != stable
    back = prod(
        secrets={"liftoff:supabaseJwtSecret": "rotated-jwt-secret-value"}, api={"traffic": pinned(stable)}
    )
    return back, engine.up(back).error


def test_a_secret_rotation_keeps_the_rollback_target_startable(engine):
    back, error = _rotate_and_roll_back(engine)
    assert error is None, error
    stable = engine.cloud.workloads[API].traffic
    assert list(engine.cloud.serving(API)) == [r["revision"] for r in pinned(next(iter(stable)))]
    # Still readable: rollback and scale-up of the old revision both work.
    for revision in engine.cloud.serving(API):
        engine.check_startable(API, revision)


def test_destroying_old_versions_breaks_the_rollback(engine, monkeypatch):
    """The defect this guards against: the provider's default deletion policy destroys the version."""
    original = secretmanager.SecretVersionArgs

    def destroying(**kwargs: Any) -> Any:
        return original(**{**kwargs, "deletion_policy": "DELETE"})

    monkeypatch.setattr(secretmanager, "SecretVersionArgs", destroying)
    _, error = _rotate_and_roll_back(engine)
    assert error is not None and error.rule == "secret-version-state"


def test_a_failed_migration_is_run_again_by_the_retry(engine):
    first = deployed(engine, prod("v1"))
    release = prod("v2")
    engine.cloud.failing_images.add(release.outputs["image_ref"])
    failed = engine.up(release)
    assert failed.error is not None and failed.error.rule == "dynamic-failure-state"
    # Nothing after the migrations changed: the old revisions still serve.
    assert engine.cloud.serving(API) == {first.outputs["api_revision"]: 100}
    assert engine.cloud.serving(WORKER) == {first.outputs["worker_revision"]: 100}
    assert not any(kind in (SERVICE, POOL) for _, kind, _ in failed.changes)

    engine.cloud.failing_images.clear()  # the cause is fixed (the database is back, say)
    retried = engine.up(prod("v2"))
    assert retried.error is None, retried.error
    assert ("update", JOB_RUN, "migrations-run") in retried.changes
    history = engine.cloud.executions["liftoff-prod-migrate"]
    assert [(e.image, e.succeeded) for e in history[1:]] == [
        (release.outputs["image_ref"], False),
        (release.outputs["image_ref"], True),
    ]
    assert len({e.name for e in history}) == len(history)
    assert engine.cloud.serving(API) == {release.outputs["api_revision"]: 100}


def _token_program(image: str) -> Iterator[dict[str, Any]]:
    """A migrations job the provider's way: run_execution_token per image."""
    job = run.Job(
        "migrations-job",
        run.JobArgs(
            name="liftoff-prod-migrate",
            location="europe-west1",
            run_execution_token=f"img-{image}",
            template=run.JobTemplateArgs(
                template=run.JobTemplateTemplateArgs(
                    containers=[run.JobTemplateTemplateContainerArgs(image=f"registry/app@{image}")]
                )
            ),
        ),
    )
    yield {"job": job.name}


def test_the_execution_token_skips_migrations_on_retry(engine):
    """Why migrations do not use run_execution_token: a failed run leaves the token in state."""

    def rendering(image: str) -> Rendering:
        return render("prod", {}, {}, program=lambda: next(_token_program(image)))

    assert engine.up(rendering("sha256:1")).error is None
    engine.cloud.failing_images.add("registry/app@sha256:2")
    assert engine.up(rendering("sha256:2")).error is not None
    engine.cloud.failing_images.clear()
    retried = engine.up(rendering("sha256:2"))
    # No diff, so no execution: the failed migration stands and the release would go on.
    assert retried.changes == []
    last = engine.last_execution("liftoff-prod-migrate")
    assert last is not None and not last.succeeded


def test_traffic_to_a_revision_that_does_not_exist_fails(engine):
    deployed(engine, prod())
    result = engine.up(prod(api={"traffic": pinned(f"{API}-00000000-0000000")}))
    assert result.error is not None and result.error.rule == "traffic-target"


def test_without_the_run_as_a_dependency_a_failed_migration_ships_anyway(engine, monkeypatch):
    """The defect this guards against: depends_on on a component does not reach its children."""

    def options_without_after(self: components.cloudrun.Container, parent: Any) -> Any:
        grants = [g for _, ref in sorted(self.secret_env.items()) for g in ref.grants]
        return pulumi.ResourceOptions(parent=parent, depends_on=grants)

    monkeypatch.setattr(components.cloudrun.Container, "options", options_without_after)
    deployed(engine, prod("v1"))
    release = prod("v2")
    engine.cloud.failing_images.add(release.outputs["image_ref"])
    failed = engine.up(release)
    assert failed.error is not None
    assert engine.cloud.serving(API) == {release.outputs["api_revision"]: 100}, "shipped unmigrated"


# IAM propagation: RULES["iam-propagation"] --------------------------------------------------


def test_a_first_deploy_waits_for_its_grants_to_take_effect():
    """Grants made in this update that take Google's typical 2 minutes to work."""
    engine = Engine(Cloud(iam=Iam(delay=TYPICAL_SECONDS)))
    first = engine.up(prod())
    assert first.error is None, first.error
    assert ("create", PROPAGATION, "secrets-grant-propagation") in first.steps
    execution = engine.last_execution("liftoff-prod-migrate")
    assert execution is not None and execution.succeeded
    # An update that adds no grant waits for nothing.
    before = engine.cloud.iam.now
    assert engine.up(prod("v2")).error is None
    assert engine.cloud.iam.now == before


def test_without_the_wait_a_first_deploy_uses_grants_before_they_work(monkeypatch):
    """The defect the wait prevents: the first Cloud Run workload is created with its grant unseen."""

    def no_wait(name: str, grants: Any, opts: Any = None) -> Any:
        return GrantPropagation(name, grants, seconds=0, opts=opts)

    monkeypatch.setattr(components.secrets, "GrantPropagation", no_wait)
    engine = Engine(Cloud(iam=Iam(delay=TYPICAL_SECONDS)))
    result = engine.up(prod())
    assert result.error is not None and result.error.rule == "iam-propagation"


def test_grants_slower_than_typical_fail_the_first_deploy_and_the_next_up_completes_it():
    """What remains: a workload the bridged provider creates cannot be retried inside the step.

    Google documents "potentially 7 minutes or longer"; the migrations run waits that long
    (components/jobrun.py), a Cloud Run job or revision created by pulumi-gcp does not, so the
    first `pulumi up` fails at it and the next one, once the grant works, goes through. The job
    exists after the failed create (RULES["bridged-create-partial-state"]), so the next `up`
    updates it under its id rather than creating it again (which the project refuses: 409).
    """
    engine = Engine(Cloud(iam=Iam(delay=PROPAGATION_SECONDS)))
    failed = engine.up(prod())
    assert failed.error is not None and failed.error.rule == "iam-propagation"
    assert failed.error.detail.split(":")[0].endswith(" job"), "a job the bridged provider creates"
    (job,) = [name for op, kind, name in failed.steps if kind == JOB and op == "create"]
    engine.cloud.iam.wait(PROPAGATION_SECONDS)  # the time a person takes to run it again
    retried = engine.up(prod())
    assert retried.error is None, retried.error
    assert ("update", JOB, job) in retried.steps, "the job is continued, not created again"
    assert not engine.init_errors
    assert engine.cloud.serving(API), "the API serves"
