"""Traffic plans and the ledger: what each step declares, and the refusal to route to a bad revision."""

from __future__ import annotations

import pytest

from components.traffic import validate
from stacks import release_plan as plan
from stacks.ledger import Ledger, Outcome, Release
from stacks.settings.release import parse

pytestmark = pytest.mark.unit

API = "liftoff-prod-api"
WORKER = "liftoff-prod-worker"
A = Release(f"{API}-aaaaaaaa-1111111", f"{WORKER}-aaaaaaaa-1111111")
B = Release(f"{API}-bbbbbbbb-2222222", f"{WORKER}-bbbbbbbb-2222222")


def valid(p: plan.ReleasePlan) -> plan.ReleasePlan:
    """Each plan is one Cloud Run would accept (sums, tags, names)."""
    validate(p.api, key="api", service=API)
    validate(p.worker, key="worker", service=WORKER)
    return p


def shares(targets) -> dict[str, int]:
    return {t.revision: t.percent for t in targets}


def test_ship_keeps_everything_on_stable_and_tags_the_candidate():
    p = valid(plan.ship(A, Ledger()))
    assert shares(p.api) == {A.api: 100, "latest": 0}
    assert [t.tag for t in p.api] == ["stable", "candidate"]
    assert shares(p.worker) == {A.worker: 100, "latest": 0}
    assert not p.traffic_only


def test_steps_move_the_api_and_the_worker_together_and_touch_only_traffic():
    p = valid(plan.step(A, B, 10, Ledger()))
    assert shares(p.api) == {A.api: 90, B.api: 10}
    assert shares(p.worker) == {A.worker: 90, B.worker: 10}
    assert p.traffic_only


def test_the_last_step_and_a_rollback_settle_on_one_release():
    assert shares(valid(plan.step(A, B, 100, Ledger())).api) == {B.api: 100, "latest": 0}
    back = valid(plan.settle(A, Ledger()))
    assert shares(back.api) == {A.api: 100, "latest": 0}
    assert shares(back.worker) == {A.worker: 100}


def test_an_api_only_release_leaves_the_worker_alone():
    api_only = Release(B.api, A.worker)
    assert shares(valid(plan.step(A, api_only, 50, Ledger())).worker) == {A.worker: 100}


def test_no_plan_sends_traffic_to_a_revision_the_ledger_marks_bad():
    ledger = Ledger().record(B, Outcome.FAILED, "2026-11-24T00:00:00+00:00", "gates")
    with pytest.raises(plan.UnsafePlanError, match=B.api):
        plan.step(A, B, 10, ledger)
    with pytest.raises(plan.UnsafePlanError):
        plan.settle(B, ledger)
    # The bad revision may stay reachable at 0 % on its tag (it is the latest), never pinned.
    assert valid(plan.settle(A, ledger)).pinned() == {A.api, A.worker}


def test_the_ledger_round_trips_and_knows_the_last_good_release():
    ledger = (
        Ledger()
        .record(A, Outcome.PROMOTED, "t1")
        .record(B, Outcome.PROMOTED, "t2")
        .record(B, Outcome.ROLLED_BACK, "t3", "by hand")
    )
    again = Ledger.from_json(ledger.dumps())
    assert again == ledger
    assert again.last_good() == A
    assert again.bad_revisions() == {B.api, B.worker}
    assert Ledger.from_json(None) == Ledger()


def test_release_settings_name_each_bad_key():
    _, problems = parse({"steps": [50, 10], "soakSeconds": 30, "approval": "yes", "colour": 1})
    assert any(p.startswith("liftoff:release.steps:") for p in problems)
    assert any(p.startswith("liftoff:release.approval:") for p in problems)
    assert any(p.startswith("liftoff:release.colour:") for p in problems)
    _, problems = parse({"soakSeconds": 30})
    assert problems == [
        "liftoff:release.soakSeconds: 30 is shorter than Cloud Monitoring's ingestion delay; use at least 240"
    ]
    assert parse({"soakSeconds": 30}, cloud=False)[1] == []
