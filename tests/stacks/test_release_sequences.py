"""Releases and rollbacks by the real controller, over the real program, on the control-plane model.

Each `pulumi up` the controller asks for renders the program with the step's plan
(`stacks.program.build(settings, release=plan)`) and is applied to the model of the engine and
of Cloud Run (tests/stacks/cloud.py), traffic-only steps as targeted updates, the way the
Automation API deployer runs them. What serves is read back from the model's Cloud Run state,
and the ledger from the engine's state. After every update the model's traffic is checked
against the ledger: no revision recorded as failed or rolled back ever serves again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from components.ledger import ReleaseLedger
from release.automation import TRAFFIC_RESOURCES
from release.controller import (
    EXIT_AWAITING_APPROVAL,
    EXIT_ERROR,
    EXIT_OK,
    EXIT_ROLLED_BACK,
    EXIT_USAGE,
    Controller,
    Report,
)
from release.gates import JobWindow, Window
from release.ports import DeployError, Live
from stacks.ledger import Ledger, Outcome, Release
from stacks.program import build
from stacks.release_plan import ReleasePlan
from stacks.settings import load
from stacks.settings.release import ReleaseSettings, SyntheticSettings
from tests.release.world import Probes, controller_over, probe_requests, probes_sent
from tests.stacks.cloud import POOL, SERVICE, Cloud, CloudError, Engine, Up
from tests.stacks.conftest import SECRETS
from tools.render import Rendering, render, stack_config

pytestmark = pytest.mark.unit

API = "liftoff-prod-api"
WORKER = "liftoff-prod-worker"
SETTINGS = ReleaseSettings(steps=(10, 50, 100), soak_seconds=300, min_requests=100)


@dataclass
class Model:
    """The ports of the release controller over the control-plane model."""

    engine: Engine = field(default_factory=lambda: Engine(Cloud()))
    image: str = "v1"
    bad_images: set[str] = field(default_factory=set)  # image tags whose /ready fails
    bad_refs: set[str] = field(default_factory=set)  # the same, as the digests workloads run
    faulty: set[str] = field(default_factory=set)  # their API revisions answer 30 % 5xx
    ups: list[tuple[str, Up]] = field(default_factory=list)
    serving_log: list[tuple[dict[str, int], dict[str, int], Ledger]] = field(default_factory=list)
    time: float = 1_800_000_000.0
    delay_seconds: float = 0.0
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)  # stack config sections
    # Real traffic: API requests and the pool's jobs a second (0: a quiet stack).
    requests_per_second: float = 20.0
    jobs_per_second: float = 2.0
    faulty_workers: set[str] = field(default_factory=set)  # their attempts fail 30 % of the time
    probe_rate: float = 10.0
    probes: list[Probes] = field(default_factory=list)

    # -- rendering and applying ----------------------------------------------------------------

    def render(self, plan: ReleasePlan | None) -> Rendering:
        config: dict[str, Any] = {**stack_config("prod"), "liftoff:imageTag": self.image}
        for section, values in self.overrides.items():
            config[f"liftoff:{section}"] = {**config.get(f"liftoff:{section}", {}), **values}

        def program() -> dict[str, Any]:
            return build(load(stack="prod"), release=plan)

        rendering = render("prod", config, SECRETS, program=program)
        if self.image in self.bad_images:
            self.bad_refs.add(rendering.outputs["image_ref"])
        return rendering

    def apply(self, kind: str, rendering: Rendering, targets: list[str] | None = None) -> Up:
        result = self.engine.up(rendering, targets=targets)
        self.ups.append((kind, result))
        live = self.read()
        self.serving_log.append((dict(live.api), dict(live.worker), live.ledger))
        if result.error is not None:
            raise DeployError(str(result.error))
        return result

    # -- Deployer ------------------------------------------------------------------------------

    def ship(self, plan: ReleasePlan) -> Release:
        rendering = self.render(plan)
        self.apply("ship", rendering)
        return Release(rendering.outputs["api_revision"], rendering.outputs["worker_revision"])

    def shift(self, plan: ReleasePlan) -> None:
        """A targeted, refreshed update, as the Automation API deployer runs it."""
        rendering = self.render(plan)
        targets = [rendering.one(kind, name).urn for kind, name in TRAFFIC_RESOURCES]
        self.engine.refresh(targets)
        self.apply("shift", rendering, targets)

    def plain_up(self) -> Up:
        """`pulumi up` by hand, with no release: the program as the stack file declares it."""
        return self.apply("plain", self.render(None))

    # -- LiveReader ----------------------------------------------------------------------------

    def read(self) -> Live:
        workloads = self.engine.cloud.workloads
        ledger = next(
            (r.outputs.get("entries") for r in self.engine.state.values() if r.type == ReleaseLedger.TYPE),
            None,
        )
        return Live(
            api=self.engine.cloud.serving(API) if API in workloads else {},
            worker=self.engine.cloud.serving(WORKER) if WORKER in workloads else {},
            ledger=Ledger.from_json(ledger),
        )

    # -- Metrics and Smoke ---------------------------------------------------------------------

    def window(self, revision: str, start: float, end: float) -> Window:
        share = self.engine.cloud.serving(API).get(revision, 0)
        requests = int(self.requests_per_second * (end - start) * share / 100)
        requests += int(probe_requests(self.probes, revision, start, end))
        errors = requests * 3 // 10 if revision in self.faulty else 0
        return Window(requests, errors, 110.0 if requests else None)

    # -- JobMetrics and Synthetic --------------------------------------------------------------

    def jobs(self, revision: str, start: float, end: float) -> JobWindow:
        """The pool's jobs and the probe jobs in the window, this revision's share of them as the
        model's instance split stands."""
        share = self.engine.cloud.serving(WORKER).get(revision, 0) / 100
        probe_jobs = sum(p.count(start, end, p.job_rate) for p in self.probes)
        attempts = int((self.jobs_per_second * (end - start) + probe_jobs) * share)
        failures = attempts * 3 // 10 if revision in self.faulty_workers else 0
        return JobWindow(attempts, failures, 0, 3.0 if attempts else None)

    def send(self, release: Release, *, api: bool, jobs: bool, seconds: float, limit: int) -> int:
        sent = probes_sent(
            release, api=api, jobs=jobs, at=self.time, seconds=seconds, rate=self.probe_rate, limit=limit
        )
        self.time += seconds
        if sent is None:
            return 0
        self.probes.append(sent)
        return sent.total

    def check(self, candidate: Release) -> str | None:
        template = self.engine.cloud.workloads[API].templates[candidate.api]
        image = str(template["containers"][0]["image"])
        return "GET /ready answered 503" if image in self.bad_refs else None

    # -- Clock ---------------------------------------------------------------------------------

    def now(self) -> float:
        return self.time

    def sleep(self, seconds: float) -> None:
        self.time += seconds

    # -- what the tests ask ----------------------------------------------------------------------

    def controller(self, settings: ReleaseSettings = SETTINGS) -> Controller:
        return controller_over(self, settings, Always())

    def release(self, image: str, **kwargs: Any) -> Report:
        self.image = image
        return self.controller().release(**kwargs)

    def never_served_once_bad(self) -> None:
        """No update ever left traffic on a revision once the ledger recorded it as bad."""
        final = self.read().ledger
        for revision in final.bad_revisions():
            since = next(
                i for i, (_, _, ledger) in enumerate(self.serving_log) if revision in ledger.bad_revisions()
            )
            for api, worker, _ in self.serving_log[since:]:
                assert revision not in api and revision not in worker, (revision, api, worker)


class Always:
    def approve(self, percent: int) -> bool | None:
        return True


@pytest.fixture
def model() -> Model:
    """Prod serving v1, released by the controller (a first deploy)."""
    m = Model()
    first = m.release("v1")
    assert first.exit_code == EXIT_OK, first.text()
    return m


def revisions(model: Model) -> Release:
    live = model.read()
    (api,) = live.api
    (worker,) = live.worker
    return Release(api, worker)


def test_a_healthy_release_steps_the_api_and_the_worker_together(model):
    v1 = revisions(model)
    report = model.release("v2")
    assert report.exit_code == EXIT_OK, report.text()
    v2 = revisions(model)
    assert v2.api != v1.api and v2.worker != v1.worker
    steps = [(api, worker) for api, worker, _ in model.serving_log[-5:]]
    assert steps[1] == ({v1.api: 90, v2.api: 10}, {v1.worker: 90, v2.worker: 10})
    assert steps[2] == ({v1.api: 50, v2.api: 50}, {v1.worker: 50, v2.worker: 50})
    assert model.read().ledger.outcome(v2) is Outcome.PROMOTED
    # Every step after the ship was traffic-only: no build, no migrations, no new revision.
    for kind, up in model.ups[-4:]:
        assert kind == "shift"
        assert {op for op, _, _ in up.changes} <= {"update"}
        assert not [c for c in up.changes if c[1] not in (SERVICE, POOL, ReleaseLedger.TYPE)]
    model.never_served_once_bad()


def test_a_release_after_a_failed_smoke_test_steps_from_what_serves(model):
    v1 = revisions(model)
    model.bad_images.add("v2")
    failed = model.release("v2")
    assert failed.exit_code == EXIT_ROLLED_BACK and failed.breached == ("smoke",)
    # v2 is the latest created revision, yet it never served.
    latest = model.engine.cloud.workloads[API].latest
    assert latest != v1.api and all(latest not in api for api, _, _ in model.serving_log)
    assert model.read().api == {v1.api: 100}
    report = model.release("v3")
    assert report.exit_code == EXIT_OK, report.text()
    v3 = revisions(model)
    assert [api for api, _, _ in model.serving_log][-4] == {v1.api: 90, v3.api: 10}
    assert all(latest not in api for api, _, _ in model.serving_log)
    model.never_served_once_bad()


def test_a_plain_up_after_a_release_moves_no_traffic(model):
    v1 = revisions(model)
    model.image = "v2"
    up = model.plain_up()
    assert ("update", SERVICE, "api-service") in up.changes  # a new revision, at 0 %
    assert model.read().api == {v1.api: 100}
    assert model.read().worker == {v1.worker: 100}
    assert model.read().ledger.outcome(v1) is Outcome.PROMOTED


def test_a_rollback_moves_the_api_and_the_worker_back_together_traffic_only(model):
    v1 = revisions(model)
    assert model.release("v2").exit_code == EXIT_OK
    v2 = revisions(model)
    model.image = "v3"  # the checkout has moved on: the rollback must not ship it
    executions = len(model.engine.cloud.executions["liftoff-prod-migrate"])
    api_revisions = set(model.engine.cloud.workloads[API].revisions)
    report = model.controller().rollback()
    assert report.exit_code == EXIT_OK, report.text()
    assert model.read().api == {v1.api: 100}
    assert model.read().worker == {v1.worker: 100}
    kind, up = model.ups[-1]
    assert kind == "shift"
    assert sorted(up.changes) == sorted(
        [
            ("update", SERVICE, "api-service"),
            ("update", POOL, "worker-pool"),
            ("update", ReleaseLedger.TYPE, "release-ledger"),
        ]
    )
    assert len(model.engine.cloud.executions["liftoff-prod-migrate"]) == executions
    assert set(model.engine.cloud.workloads[API].revisions) == api_revisions
    assert model.read().ledger.outcome(v2) is Outcome.ROLLED_BACK
    model.never_served_once_bad()


def test_a_release_after_a_rollback_never_returns_to_the_rolled_back_revision(model):
    v1 = revisions(model)
    model.release("v2")
    v2 = revisions(model)
    model.controller().rollback()
    # Shipping v2 again is the same revisions (names follow the template): refused.
    again = model.release("v2")
    assert again.exit_code == EXIT_USAGE and "--retry" in again.lines[-1]
    assert model.read().api == {v1.api: 100}
    # A fix ships beside v1, never beside v2.
    report = model.release("v3")
    assert report.exit_code == EXIT_OK, report.text()
    assert all(v2.api not in api for api, _, _ in model.serving_log[-5:])
    model.never_served_once_bad()


def test_a_breach_rolls_back_the_worker_with_the_api(model):
    v1 = revisions(model)
    model.image = "v2"
    rendered = model.render(None)
    model.faulty.add(rendered.outputs["api_revision"])
    report = model.release("v2")
    assert report.exit_code == EXIT_ROLLED_BACK and report.breached == ("error-ratio",)
    assert model.read().api == {v1.api: 100}
    assert model.read().worker == {v1.worker: 100}
    model.never_served_once_bad()


def test_a_retried_release_after_a_failed_migration(model):
    v1 = revisions(model)
    model.image = "v2"
    image = model.render(None).outputs["image_ref"]
    model.engine.cloud.failing_images.add(image)
    failed = model.release("v2")
    assert failed.exit_code == EXIT_ERROR
    assert model.read().api == {v1.api: 100} and model.read().worker == {v1.worker: 100}
    model.engine.cloud.failing_images.clear()  # the database is back
    report = model.release("v2")
    assert report.exit_code == EXIT_OK, report.text()
    assert model.read().ledger.outcome(revisions(model)) is Outcome.PROMOTED
    runs = model.engine.cloud.executions["liftoff-prod-migrate"]
    assert [e.succeeded for e in runs[-2:]] == [False, True]
    model.never_served_once_bad()


def test_a_retried_release_after_a_transient_smoke_failure(model):
    model.bad_images.add("v2")
    assert model.release("v2").exit_code == EXIT_ROLLED_BACK
    model.bad_images.clear()  # it was the database restarting
    model.bad_refs.clear()
    assert model.release("v2").exit_code == EXIT_USAGE
    report = model.release("v2", retry=True)
    assert report.exit_code == EXIT_OK, report.text()
    assert model.read().ledger.outcome(revisions(model)) is Outcome.PROMOTED


def test_an_api_only_release_breaches_and_rolls_back_onto_the_shared_worker(model):
    v1 = revisions(model)
    model.overrides["api"] = {"maxInstances": 30}  # the API's template changes, the worker's does not
    rendered = model.render(None)
    assert rendered.outputs["worker_revision"] == v1.worker
    model.faulty.add(rendered.outputs["api_revision"])
    report = model.release("v1")
    assert report.exit_code == EXIT_ROLLED_BACK, report.text()
    assert model.read().api == {v1.api: 100} and model.read().worker == {v1.worker: 100}
    # The worker shared with v1 stays good: the next release and a rollback can use it.
    model.overrides["api"] = {"maxInstances": 40}
    model.faulty.clear()
    assert model.release("v1").exit_code == EXIT_OK
    assert model.controller().rollback().exit_code == EXIT_OK
    assert model.read().api == {v1.api: 100} and model.read().worker == {v1.worker: 100}
    model.never_served_once_bad()


def test_a_worker_only_release_steps_the_worker_alone(model):
    v1 = revisions(model)
    model.overrides["worker"] = {"concurrency": 16}
    report = model.release("v1")
    assert report.exit_code == EXIT_OK, report.text()
    v2 = revisions(model)
    assert v2.api == v1.api and v2.worker != v1.worker
    assert [worker for _, worker, _ in model.serving_log][-4] == {v1.worker: 90, v2.worker: 10}
    assert all(api == {v1.api: 100} for api, _, _ in model.serving_log[-5:])


def test_an_unapproved_canary_is_superseded_by_the_next_release(model):
    v1 = revisions(model)
    paused = model.controller(SETTINGS.model_copy(update={"approval": True}))
    paused.approver = Never()
    model.image = "v2"
    assert paused.release().exit_code == EXIT_AWAITING_APPROVAL
    v2_api = next(r for r in model.read().api if r != v1.api)
    assert model.read().api == {v1.api: 90, v2_api: 10}
    report = model.release("v3")
    assert report.exit_code == EXIT_OK, report.text()
    assert model.read().ledger.entries[-2].outcome is Outcome.SUPERSEDED
    assert [api for api, _, _ in model.serving_log][-6] == {v1.api: 100}  # v2 sent back first
    model.never_served_once_bad()


def test_a_paused_api_only_canary_rolls_back_on_the_shared_worker(model):
    v1 = revisions(model)
    model.overrides["api"] = {"maxInstances": 30}
    model.image = "v1"
    paused = model.controller(SETTINGS.model_copy(update={"approval": True}))
    paused.approver = Never()
    assert paused.release().exit_code == EXIT_AWAITING_APPROVAL
    assert model.read().worker == {v1.worker: 100}
    report = model.controller().rollback()
    assert report.exit_code == EXIT_OK, report.text()
    assert model.read().api == {v1.api: 100} and model.read().worker == {v1.worker: 100}


def test_the_ledger_is_written_only_after_the_traffic_it_records(model, monkeypatch):
    """A rollback whose worker pool update fails leaves the ledger as it was, so the release is
    still in progress and `make rollback` finishes the job."""
    v1 = revisions(model)
    rendered = model.render(None)
    model.image = "v2"
    model.faulty.add(model.render(None).outputs["api_revision"])
    del rendered
    original = Engine._cloud_step
    failures = {"left": 0}

    def flaky(self: Engine, op: str, old: Any, new: Any, ids: Any) -> None:
        if new.type == POOL and failures["left"]:
            failures["left"] -= 1
            raise CloudError("traffic-target", "worker pool: the API answered 503")
        original(self, op, old, new, ids)

    monkeypatch.setattr(Engine, "_cloud_step", flaky)
    controller = model.controller()
    controller.deployer = FailingRollback(model, failures)
    report = controller.release()
    assert report.outcome == "rollback-failed", report.text()
    assert model.read().ledger.in_progress() is not None  # not recorded as sent back
    fixed = model.controller().rollback()
    assert fixed.exit_code == EXIT_OK, fixed.text()
    assert model.read().api == {v1.api: 100} and model.read().worker == {v1.worker: 100}
    model.never_served_once_bad()


class Never:
    def approve(self, percent: int) -> bool | None:
        return None


@dataclass
class FailingRollback:
    """The model's deployer, arming one worker pool failure for the first rollback (a settle)."""

    model: Model
    failures: dict[str, int]

    def ship(self, plan: ReleasePlan) -> Release:
        return self.model.ship(plan)

    def shift(self, plan: ReleasePlan) -> None:
        if len(plan.api) == 2 and plan.api[0].percent == 100 and not self.failures.get("armed"):
            self.failures["armed"] = 1
            self.failures["left"] = 1
        self.model.shift(plan)


def test_a_worker_only_release_is_rolled_back_on_a_worker_gate(model):
    v1 = revisions(model)
    model.overrides["worker"] = {"concurrency": 16}  # the worker's template changes, the API's does not
    rendered = model.render(None)
    assert rendered.outputs["api_revision"] == v1.api
    model.faulty_workers.add(rendered.outputs["worker_revision"])
    report = model.release("v1")
    assert report.exit_code == EXIT_ROLLED_BACK, report.text()
    assert report.breached == ("worker-failure-ratio",), "judged on its jobs, not on the API's requests"
    assert model.read().api == {v1.api: 100} and model.read().worker == {v1.worker: 100}
    # Back by a traffic-only update: nothing rebuilt, no new revision.
    assert [kind for kind, _ in model.ups[-3:]] == ["ship", "shift", "shift"]
    assert all(api == {v1.api: 100} for api, _, _ in model.serving_log[-3:])
    model.never_served_once_bad()


def test_a_quiet_stack_is_judged_on_synthetic_traffic_alone(model):
    model.requests_per_second = model.jobs_per_second = 0.0
    probing = SETTINGS.model_copy(update={"synthetic": SyntheticSettings(rate=10, budget=20_000)})
    model.image = "v2"
    report = model.controller(probing).release()
    assert report.exit_code == EXIT_OK, report.text()
    v2 = revisions(model)
    assert model.read().ledger.outcome(v2) is Outcome.PROMOTED
    sent = {p.release for p in model.probes}
    assert sent == {v2}, "every probe went to the candidate"
    # Without the probes the same release is inconclusive and goes back.
    model.probes.clear()
    model.image = "v3"
    quiet = model.controller().release()
    assert quiet.exit_code == EXIT_ROLLED_BACK and quiet.breached == ("min-requests", "min-job-attempts")
    assert model.read().api == {v2.api: 100}
    model.never_served_once_bad()
