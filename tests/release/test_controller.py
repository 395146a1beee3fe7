"""The release controller's decisions, against an in-memory Cloud Run that enforces traffic rules."""

from __future__ import annotations

import pytest

from components.traffic import TrafficTarget
from release.controller import (
    EXIT_AWAITING_APPROVAL,
    EXIT_ERROR,
    EXIT_OK,
    EXIT_ROLLED_BACK,
    EXIT_USAGE,
    Controller,
)
from release.gates import Window
from stacks.ledger import Outcome, Release
from stacks.settings.release import ReleaseSettings, SyntheticSettings
from tests.release.world import Approvals, World, controller_over, release

pytestmark = pytest.mark.unit

SETTINGS = ReleaseSettings(steps=(10, 50, 100), soak_seconds=300, min_requests=100)
A, B, C = release(1), release(2), release(3)


def controller(
    world: World, settings: ReleaseSettings = SETTINGS, approver: Approvals | None = None
) -> Controller:
    return world.controller(settings, approver)


def failing(errors_per_request: float):
    def window(start: float, end: float) -> Window:
        requests = int(20 * (end - start) * 0.1)
        return Window(requests, int(requests * errors_per_request), 150.0)

    return window


@pytest.fixture
def world() -> World:
    """A prod that serves release A, everywhere, with A recorded as good."""
    w = World(next_release=A)
    assert controller(w).release().exit_code == EXIT_OK
    w.history.clear()
    w.next_release = B
    return w


def test_a_first_deploy_is_smoke_tested_and_recorded_good():
    w = World(next_release=A)
    report = controller(w).release()
    assert report.exit_code == EXIT_OK and report.outcome == "promoted"
    assert w.read().api == {A.api: 100}
    assert w.ledger.outcome(A) is Outcome.PROMOTED


def test_a_healthy_release_steps_through_10_50_100(world):
    report = controller(world).release()
    assert report.exit_code == EXIT_OK and report.outcome == "promoted"
    assert world.history == [
        {A.api: 100},  # shipped at 0 %
        {A.api: 90, B.api: 10},
        {A.api: 50, B.api: 50},
        {B.api: 100},
        {B.api: 100},  # recorded as promoted
    ]
    assert world.read().worker == {B.worker: 100}
    assert world.ledger.outcome(B) is Outcome.PROMOTED


def test_a_breach_rolls_the_api_and_the_worker_back_at_once(world):
    world.windows[B.api] = failing(0.3)
    start = world.time
    report = controller(world).release()
    assert report.exit_code == EXIT_ROLLED_BACK
    assert report.breached == ("error-ratio",)
    assert world.read().api == {A.api: 100}
    assert world.read().worker == {A.worker: 100}
    assert max(state.get(B.api, 0) for state in world.history) == 10
    assert world.ledger.outcome(B) is Outcome.FAILED
    assert "breach_to_stable_seconds" in report.timings
    # The breach is caught at the first poll, not after the whole soak.
    assert world.time - start < 2 * SETTINGS.soak_seconds


def test_a_failed_smoke_test_never_gives_the_candidate_traffic(world):
    world.smoke_failures.add(B.api)
    report = controller(world).release()
    assert report.exit_code == EXIT_ROLLED_BACK and report.breached == ("smoke",)
    assert not world.served(B.api)
    assert world.ledger.outcome(B) is Outcome.FAILED


def test_the_same_failed_revision_is_refused_unless_retried(world):
    world.smoke_failures.add(B.api)
    controller(world).release()
    world.smoke_failures.clear()
    refused = controller(world).release()
    assert refused.exit_code == EXIT_USAGE and "--retry" in refused.lines[-1]
    assert not world.served(B.api)
    assert controller(world).release(retry=True).exit_code == EXIT_OK
    assert world.read().api == {B.api: 100}


def test_a_release_after_a_failed_one_steps_from_what_serves(world):
    world.windows[B.api] = failing(0.5)
    controller(world).release()
    world.next_release = C
    world.history.clear()
    assert controller(world).release().exit_code == EXIT_OK
    assert all(B.api not in state for state in world.history)
    assert world.history[1] == {A.api: 90, C.api: 10}


def test_a_rollback_by_hand_goes_to_the_last_good_release(world):
    controller(world).release()
    assert world.read().api == {B.api: 100}
    report = controller(world).rollback()
    assert report.exit_code == EXIT_OK
    assert world.read().api == {A.api: 100} and world.read().worker == {A.worker: 100}
    assert world.ledger.outcome(B) is Outcome.ROLLED_BACK
    assert world.ups[-1] == "shift"
    # The next release ships something new beside A, never back onto B.
    world.next_release = C
    world.history.clear()
    assert controller(world).release().exit_code == EXIT_OK
    assert not world.served(B.api)


def test_a_rollback_with_nothing_earlier_is_refused():
    w = World(next_release=A)
    controller(w).release()
    report = controller(w).rollback()
    assert report.exit_code == EXIT_USAGE
    assert w.read().api == {A.api: 100}


def test_a_rollback_mid_canary_goes_back_to_stable(world):
    settings = SETTINGS.model_copy(update={"approval": True})
    controller(world, settings, Approvals(None)).release()
    assert world.read().api == {A.api: 90, B.api: 10}
    assert controller(world).rollback().exit_code == EXIT_OK
    assert world.read().api == {A.api: 100}


def test_approval_pauses_then_a_later_run_resumes_from_the_live_state(world):
    settings = SETTINGS.model_copy(update={"approval": True})
    approvals = Approvals(None)
    paused = controller(world, settings, approvals).release()
    assert paused.exit_code == EXIT_AWAITING_APPROVAL
    assert world.read().api == {A.api: 90, B.api: 10}
    ships = world.ups.count("ship")
    resumed = controller(world, settings, Approvals(True, True)).release(resume=True)
    assert resumed.exit_code == EXIT_OK
    assert world.ups.count("ship") == ships  # resumed, not shipped again
    assert world.read().api == {B.api: 100}


def test_a_denied_approval_rolls_back(world):
    settings = SETTINGS.model_copy(update={"approval": True})
    report = controller(world, settings, Approvals(False)).release()
    assert report.exit_code == EXIT_ROLLED_BACK and report.breached == ("approval",)
    assert world.read().api == {A.api: 100}


def test_unreadable_metrics_roll_back(world):
    def broken(start: float, end: float) -> Window:
        raise ConnectionError("monitoring.googleapis.com unreachable")

    world.windows[B.api] = broken
    report = controller(world).release()
    assert report.exit_code == EXIT_ERROR and report.outcome == "rolled-back"
    assert world.read().api == {A.api: 100}


def test_a_quiet_step_is_inconclusive_and_rolls_back_unless_told_to_promote(world):
    world.windows[B.api] = lambda start, end: Window(3, 0, 100.0)
    report = controller(world).release()
    assert report.exit_code == EXIT_ROLLED_BACK and report.breached == ("min-requests",)
    world.next_release = C
    world.windows[C.api] = lambda start, end: Window(3, 0, 100.0)
    lenient = SETTINGS.model_copy(update={"on_inconclusive": "promote"})
    assert controller(world, lenient).release().exit_code == EXIT_OK


def test_a_retried_release_after_a_failed_up_ships_again(world):
    world.failing_ups = 1
    failed = controller(world).release()
    assert failed.exit_code == EXIT_ERROR
    assert world.read().api == {A.api: 100}
    assert controller(world).release().exit_code == EXIT_OK
    assert world.read().api == {B.api: 100}


def test_an_unchanged_program_has_nothing_to_release(world):
    world.next_release = A
    report = controller(world).release()
    assert report.exit_code == EXIT_OK and report.outcome == "unchanged"


def test_a_rollback_that_cannot_be_applied_says_so_loudly(world):
    world.windows[B.api] = failing(0.5)
    world.fail_shift(2, "quota exceeded")  # the rollback after the breach at 10 %
    report = controller(world).release()
    assert report.exit_code == EXIT_ERROR and report.outcome == "rollback-failed"
    assert "make rollback" in report.lines[-1]


def test_a_rollback_by_hand_during_a_release_stops_the_release(world):
    """The on-call rolls back while the release soaks at 10 %; the release must not undo it."""
    ctl = controller(world)
    original = world.sleep
    rolled = {"done": False}

    def sleep(seconds: float) -> None:
        original(seconds)
        if not rolled["done"] and world.read().api.get(B.api) == 10:
            rolled["done"] = True
            assert controller(world).rollback().exit_code == EXIT_OK

    world.sleep = sleep
    report = ctl.release()
    assert report.outcome == "interrupted" and report.breached == ("traffic-moved",)
    assert world.read().api == {A.api: 100}
    assert world.ledger.outcome(B) is Outcome.ROLLED_BACK


def test_a_step_that_cannot_be_applied_sends_everything_back(world):
    """Moving from 10 % to 50 % fails: the candidate still has 10 %, so the release rolls back."""
    world.fail_shift(2, "the Cloud Run API answered 503")
    report = controller(world).release()
    assert report.exit_code == EXIT_ERROR and report.outcome == "rolled-back"
    assert world.read().api == {A.api: 100}
    assert world.ledger.outcome(B) is Outcome.FAILED


def test_a_live_read_failing_mid_release_sends_everything_back(world):
    original = world.read
    reads = {"n": 0}

    def read():
        reads["n"] += 1
        if reads["n"] == 4:  # during the soak at 10 %
            raise ConnectionError("run.googleapis.com unreachable")
        return original()

    world.read = read
    report = controller(world).release()
    assert report.exit_code == EXIT_ERROR and report.outcome == "rolled-back"
    assert original().api == {A.api: 100}


def test_an_unfinished_release_is_superseded_by_the_next_one(world):
    settings = SETTINGS.model_copy(update={"approval": True})
    controller(world, settings, Approvals(None)).release()
    assert world.read().api == {A.api: 90, B.api: 10}
    world.next_release = C
    world.history.clear()
    report = controller(world).release()
    assert report.exit_code == EXIT_OK, report.text()
    assert world.history[0] == {A.api: 100}  # B sent back before C shipped
    assert world.history[2] == {A.api: 90, C.api: 10}
    assert world.ledger.outcome(B) is Outcome.SUPERSEDED
    # Superseded is not failed: the same revisions may ship again.
    world.next_release = B
    assert controller(world).release().exit_code == EXIT_OK


def test_resume_with_nothing_unfinished_is_refused(world):
    report = controller(world).release(resume=True)
    assert report.exit_code == EXIT_USAGE and "nothing to resume" in report.lines[-1]
    assert world.ups.count("ship") == 1  # the fixture's first deploy only


def test_an_api_only_release_that_breaches_rolls_back_onto_the_shared_worker(world):
    api_only = Release(release(2).api, A.worker)
    world.next_release = api_only
    world.windows[api_only.api] = failing(0.5)
    report = controller(world).release()
    assert report.exit_code == EXIT_ROLLED_BACK, report.text()
    assert world.read().api == {A.api: 100} and world.read().worker == {A.worker: 100}
    assert A.worker not in world.ledger.bad_revisions()
    # The next release steps from A as usual.
    world.next_release = C
    assert controller(world).release().exit_code == EXIT_OK


def test_a_promoted_api_only_release_can_be_rolled_back(world):
    api_only = Release(release(2).api, A.worker)
    world.next_release = api_only
    assert controller(world).release().exit_code == EXIT_OK
    assert controller(world).rollback().exit_code == EXIT_OK
    assert world.read().api == {A.api: 100} and world.read().worker == {A.worker: 100}


def test_a_worker_only_release_resumes_at_the_workers_share(world):
    worker_only = Release(A.api, release(2).worker)
    world.next_release = worker_only
    settings = SETTINGS.model_copy(update={"approval": True})
    paused = controller(world, settings, Approvals(None)).release()
    assert paused.exit_code == EXIT_AWAITING_APPROVAL
    assert world.read().worker == {A.worker: 90, worker_only.worker: 10}
    approvals = Approvals(None)
    again = controller(world, settings, approvals).release(resume=True)
    # Still at 10 %: the 50 % step waits for its approval.
    assert again.exit_code == EXIT_AWAITING_APPROVAL and approvals.asked == [50]
    assert world.read().worker == {A.worker: 90, worker_only.worker: 10}


def test_a_failed_first_deploy_does_not_wedge_the_stack():
    w = World(next_release=A)
    w.smoke_failures.add(A.api)
    assert controller(w).release().exit_code == EXIT_ROLLED_BACK
    w.next_release = B
    report = controller(w).release()
    assert report.exit_code == EXIT_OK, report.text()
    assert w.read().api == {B.api: 100}


def test_a_half_applied_first_step_is_rolled_back(world):
    """The service took its 10 % but the worker pool's update failed (they run in parallel)."""
    world.fail_shift(1, "worker pool: 503", api_applied=True)  # the first step
    report = controller(world).release()
    assert report.exit_code == EXIT_ERROR and report.outcome == "rolled-back", report.text()
    assert world.read().api == {A.api: 100}


def test_a_second_rollback_after_a_gate_already_sent_the_release_back_needs_further(world):
    controller(world).release()  # B promoted
    world.next_release = C
    world.windows[C.api] = failing(0.5)
    assert controller(world).release().exit_code == EXIT_ROLLED_BACK  # C sent back by a gate
    refused = controller(world).rollback()
    assert refused.exit_code == EXIT_USAGE and "--further" in refused.lines[-1]
    assert world.read().api == {B.api: 100}
    assert controller(world).rollback(further=True).exit_code == EXIT_OK
    assert world.read().api == {A.api: 100}


def test_a_step_passes_only_once_its_whole_soak_is_readable(world):
    """Cloud Monitoring shows a request up to 180 s late: the end of each step must be read too."""
    world.delay_seconds = 180.0
    stepped: dict[str, float] = {}

    def late_errors(start: float, end: float) -> Window:
        # Healthy until the last 30 s of the first step's soak, then half the requests fail;
        # nothing newer than `end - delay` is visible yet.
        stepped.setdefault("start", start)
        visible = end - world.delay_seconds
        bad_from = stepped["start"] + SETTINGS.soak_seconds - 30
        requests = int(2 * max(0.0, visible - start))
        errors = int(2 * max(0.0, visible - max(start, bad_from)) * 0.5)
        return Window(requests, errors, 120.0)

    world.windows[B.api] = late_errors
    report = controller(world).release()
    assert report.exit_code == EXIT_ROLLED_BACK and report.breached == ("error-ratio",), report.text()
    assert max(state.get(B.api, 0) for state in world.history) == 10


def test_each_release_records_the_commit_it_was_shipped_from():
    w = World(next_release=A)
    ctl = controller(w)
    ctl.source = "1111111111111111111111111111111111111111"
    ctl.release()
    w.next_release = B
    ctl.source = "2222222222222222222222222222222222222222"
    ctl.release()
    assert [e.commit for e in w.ledger.entries] == [
        "1111111111111111111111111111111111111111",
        "2222222222222222222222222222222222222222",
    ]
    report = controller(w).rollback()
    assert report.lines[-1] == f"{A.api} was shipped from commit 1111111111111111111111111111111111111111"


def test_requests_not_yet_readable_when_a_step_passes_are_judged_by_the_next(world):
    """B fails half its requests from 320 s to 460 s into its first step, which passes at about
    480 s with only 300 s readable: the next step's window starts where that one stopped."""
    world.delay_seconds = 180.0
    first_step: dict[str, float] = {}

    def fraction(t: float) -> float:
        if not first_step and world.share_at(B.api, t) == 10:
            first_step["at"] = t
        begun = first_step.get("at")
        return 0.5 if begun is not None and 320 <= t - begun < 460 else 0.0

    world.error_fraction[B.api] = fraction
    report = controller(world).release()
    assert report.exit_code == EXIT_ROLLED_BACK and report.breached == ("error-ratio",), report.text()
    assert world.read().api == {A.api: 100}


def test_the_last_steps_final_minutes_are_judged_before_it_is_recorded_good(world):
    world.delay_seconds = 180.0
    promoted_at: dict[str, float] = {}

    def fraction(t: float) -> float:
        if world.share_at(B.api, t) == 100:
            promoted_at.setdefault("at", t)
            # Fails only in the minutes a pass at 100 % could not yet read.
            return 0.5 if t - promoted_at["at"] >= SETTINGS.soak_seconds else 0.0
        return 0.0

    world.error_fraction[B.api] = fraction
    report = controller(world).release()
    assert report.exit_code == EXIT_ROLLED_BACK, report.text()
    assert world.read().api == {A.api: 100}


def test_a_paused_api_only_release_can_be_rolled_back_resumed_or_superseded(world):
    api_only = Release(release(2).api, A.worker)
    settings = SETTINGS.model_copy(update={"approval": True})
    for finish in ("rollback", "resume", "supersede"):
        world.next_release = api_only
        paused = controller(world, settings, Approvals(None)).release(retry=True)
        assert paused.exit_code == EXIT_AWAITING_APPROVAL, (finish, paused.text())
        assert world.read().api == {A.api: 90, api_only.api: 10}
        if finish == "rollback":
            assert controller(world).rollback().exit_code == EXIT_OK
            assert world.read().api == {A.api: 100}
        elif finish == "resume":
            report = controller(world, settings, Approvals(True, True)).release(resume=True)
            assert report.exit_code == EXIT_OK, report.text()
            assert world.read().api == {api_only.api: 100}
            assert controller(world).rollback().exit_code == EXIT_OK
        else:
            world.next_release = C
            report = controller(world).release()
            assert report.exit_code == EXIT_OK, report.text()
            assert world.ledger.outcome(api_only) is Outcome.SUPERSEDED
            assert world.read().api == {C.api: 100}


def test_a_rollback_that_failed_half_way_is_finished_by_make_rollback(world):
    """The service went back to stable but the worker pool's update failed: the ledger, written
    after both, still says canary, and `make rollback` sends the rest back."""
    world.windows[B.api] = failing(0.5)
    # The automatic rollback after the breach at 10 %.
    world.fail_shift(2, "worker pool: 503", api_applied=True)
    report = controller(world).release()
    assert report.outcome == "rollback-failed"
    assert world.read().api == {A.api: 100} and world.read().worker == {A.worker: 90, B.worker: 10}
    fixed = controller(world).rollback()
    assert fixed.exit_code == EXIT_OK, fixed.text()
    assert world.read().worker == {A.worker: 100}
    assert world.ledger.outcome(B) is Outcome.ROLLED_BACK


def test_a_rollback_recorded_but_not_applied_is_repaired(world):
    """The ledger says B is back, yet its traffic still flows: make rollback repairs, no --further."""
    settings = SETTINGS.model_copy(update={"approval": True})
    controller(world, settings, Approvals(None)).release()  # B holds 10 %
    world.ledger = world.ledger.record(B, Outcome.FAILED, "t", "gates")
    report = controller(world).rollback()
    assert report.exit_code == EXIT_OK, report.text()
    assert world.read().api == {A.api: 100} and world.read().worker == {A.worker: 100}


def test_an_api_moved_back_by_hand_mid_canary_still_rolls_the_worker_back(world):
    controller(world).release()  # B promoted
    world.next_release = C
    settings = SETTINGS.model_copy(update={"approval": True})
    controller(world, settings, Approvals(None)).release()  # C holds 10 %
    world.api.apply((TrafficTarget(100, B.api),), tags=True)  # the console, by hand
    report = controller(world).rollback()
    assert report.exit_code == EXIT_OK, report.text()
    assert world.read().api == {B.api: 100} and world.read().worker == {B.worker: 100}
    assert world.ledger.outcome(C) is Outcome.ROLLED_BACK
    assert world.ledger.outcome(B) is Outcome.PROMOTED


def test_a_retried_release_may_reuse_a_worker_revision_that_failed_before(world):
    failed = Release(release(2).api, release(2).worker)
    world.next_release = failed
    world.windows[failed.api] = failing(0.5)
    assert controller(world).release().exit_code == EXIT_ROLLED_BACK
    fix = Release(release(3).api, failed.worker)  # the API is fixed, the worker is the same
    world.next_release = fix
    assert controller(world).release().exit_code == EXIT_USAGE
    report = controller(world).release(retry=True)
    assert report.exit_code == EXIT_OK, report.text()
    assert world.read().worker == {failed.worker: 100}


def test_a_failed_record_of_a_good_release_does_not_roll_it_back(world):
    world.fail_shift(4, "state backend unavailable")  # the record after the 100 % step passed
    report = controller(world).release()
    assert report.exit_code == EXIT_ERROR and report.outcome == "unrecorded", report.text()
    assert world.read().api == {B.api: 100}
    again = controller(world).release(resume=True)
    assert again.exit_code == EXIT_OK, again.text()
    assert world.ledger.outcome(B) is Outcome.PROMOTED


def test_an_unfinished_only_rollback_sends_back_a_release_holding_for_approval(world):
    """A promotion nobody approved: the paused canary goes back to stable, recorded as rolled back."""
    settings = SETTINGS.model_copy(update={"approval": True})
    controller(world, settings, Approvals(None)).release()
    assert world.read().api == {A.api: 90, B.api: 10}
    report = controller(world).rollback(unfinished=True)
    assert report.exit_code == EXIT_OK and report.outcome == "rolled-back", report.text()
    assert world.read().api == {A.api: 100} and world.read().worker == {A.worker: 100}
    assert world.ledger.outcome(B) is Outcome.ROLLED_BACK


def test_an_unfinished_only_rollback_finishes_a_half_applied_one(world):
    world.windows[B.api] = failing(0.5)
    world.fail_shift(2, "worker pool: 503", api_applied=True)
    assert controller(world).release().outcome == "rollback-failed"
    report = controller(world).rollback(unfinished=True)
    assert report.exit_code == EXIT_OK and report.outcome == "rolled-back", report.text()
    assert world.read().worker == {A.worker: 100}


def test_an_unfinished_only_rollback_leaves_settled_traffic_alone(world):
    """Promoted, sent back by a gate, or already rolled back by hand: nothing moves, and it succeeds."""
    controller(world).release()  # B promoted
    ups = len(world.ups)
    settled = controller(world).rollback(unfinished=True)
    assert settled.exit_code == EXIT_OK and settled.outcome == "settled", settled.text()
    assert len(world.ups) == ups  # no update at all
    assert world.read().api == {B.api: 100} and world.ledger.outcome(B) is Outcome.PROMOTED
    world.next_release = C
    world.windows[C.api] = failing(0.5)
    assert controller(world).release().exit_code == EXIT_ROLLED_BACK
    ups = len(world.ups)
    assert controller(world).rollback(unfinished=True).outcome == "settled"
    assert len(world.ups) == ups and world.read().api == {B.api: 100}
    # A plain rollback of the same state is refused: the newest release is already sent back.
    assert controller(world).rollback().exit_code == EXIT_USAGE


# -- the worker's gates and synthetic traffic ---------------------------------------------------


def test_a_worker_only_release_is_judged_on_its_jobs_and_rolled_back_traffic_only(world):
    worker_only = Release(A.api, release(2).worker)
    world.next_release = worker_only
    world.job_failure[worker_only.worker] = 0.3
    world.error_fraction[A.api] = lambda t: 0.5  # the API's requests say nothing of this release
    report = controller(world).release()
    assert report.exit_code == EXIT_ROLLED_BACK and report.breached == ("worker-failure-ratio",)
    assert world.read().api == {A.api: 100} and world.read().worker == {A.worker: 100}
    assert world.ledger.outcome(worker_only) is Outcome.FAILED
    assert world.ups[-2:] == ["shift", "shift"]


def test_a_release_of_both_is_rolled_back_on_either_part(world):
    world.job_failure[B.worker] = 0.3
    report = controller(world).release()
    assert report.exit_code == EXIT_ROLLED_BACK and report.breached == ("worker-failure-ratio",)
    assert world.read().api == {A.api: 100} and world.read().worker == {A.worker: 100}


def test_probes_are_sent_only_while_a_step_is_short_and_never_past_the_budget(world):
    world.requests_per_second, world.jobs_per_second = 0.0, 0.0
    probing = SETTINGS.model_copy(update={"synthetic": SyntheticSettings(rate=10, budget=20_000)})
    report = controller(world, probing).release()
    assert report.exit_code == EXIT_OK
    assert {p.release for p in world.probes} == {B}
    spent = sum(p.count(p.start, p.end, p.api_rate + p.job_rate) for p in world.probes)
    assert 0 < spent <= 20_000
    # With plenty of real traffic, requests and jobs both, no probe is needed.
    busy = World(next_release=A, jobs_per_second=20.0)
    controller(busy, probing).release()
    busy.next_release = B
    assert controller(busy, probing).release().exit_code == EXIT_OK
    assert busy.probes == []


def test_a_spent_budget_leaves_a_quiet_step_inconclusive(world):
    world.requests_per_second, world.jobs_per_second = 0.0, 0.0
    stingy = SETTINGS.model_copy(update={"synthetic": SyntheticSettings(rate=10, budget=30)})
    report = controller(world, stingy).release()
    assert report.exit_code == EXIT_ROLLED_BACK
    assert set(report.breached) <= {"min-requests", "min-job-attempts"}
    assert any("budget of 30 probes is spent" in line for line in report.lines)
    assert world.read().api == {A.api: 100}


def test_declared_probes_with_nothing_to_send_them_are_said_not_silently_skipped(world):
    probing = SETTINGS.model_copy(update={"synthetic": SyntheticSettings(rate=10, budget=20_000)})
    unsent = controller_over(world, probing, Approvals(), synthetic=None)
    report = unsent.release()
    assert report.exit_code == EXIT_OK
    assert "cannot be sent: no probe tenant token (LIFTOFF_PROBE_TOKEN)" in report.lines[0]
    assert world.probes == []


def test_each_attempt_is_judged_in_one_step_only_though_requests_wait_for_their_delay(world):
    world.delay_seconds = 180.0
    asked: list[tuple[float, float]] = []
    read = world.jobs

    def jobs(revision: str, start: float, end: float):
        if revision == B.worker:
            asked.append((start, end))
        return read(revision, start, end)

    world.jobs = jobs
    assert controller(world).release().exit_code == EXIT_OK
    # Each step reads a growing window from one start; the next step starts where it ended.
    starts = sorted({start for start, _ in asked})
    for earlier, later in zip(starts, starts[1:], strict=False):
        judged = max(end for start, end in asked if start == earlier)
        assert later == judged, (earlier, later, judged)
