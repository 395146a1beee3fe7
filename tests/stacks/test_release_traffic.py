"""Release settings hold at the stack's own declared traffic, or the stack is refused before anything.

The rule (stacks/settings/judgeable.py, `release_traffic_problems`) models how the controller counts a
step's requests; the property test below holds it against the controller itself, run on the
in-memory Cloud Run at the declared rate with Cloud Monitoring's delay.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from release.cloud import CloudMonitoringMetrics
from release.controller import EXIT_OK, EXIT_ROLLED_BACK
from stacks.settings import ConfigError, UsageSettings, release_traffic_problems, seconds_per_month
from stacks.settings.release import ReleaseSettings, SyntheticSettings
from tests.release.world import World, release
from tests.stacks.conftest import render_stack
from tools.cost import Context, load_prices
from tools.render import Rendering, stack_config

pytestmark = pytest.mark.unit

A, B = release(1), release(2)


def usage(stack: str, **changes: Any) -> dict[str, Any]:
    return {"liftoff:usage": {**stack_config(stack)["liftoff:usage"], **changes}}


def release_keys(stack: str, **changes: Any) -> dict[str, Any]:
    return {"liftoff:release": {**stack_config(stack)["liftoff:release"], **changes}}


def step_requests(settings: ReleaseSettings, per_month: int, percent: int) -> Fraction:
    """What the rule expects a step to see: the mean rate × the share × maxSoakSeconds."""
    return Fraction(per_month) / seconds_per_month() * percent / 100 * settings.wait_limit_seconds


# --- The committed stack files ----------------------------------------------------------------


@pytest.mark.parametrize("stack", ["staging", "prod"])
def test_each_stack_file_can_judge_its_steps_or_promotes_by_its_own_choice(
    stack: str, request: pytest.FixtureRequest
) -> None:
    rendering: Rendering = request.getfixturevalue(stack)  # renders, so its settings loaded
    config = stack_config(stack)
    settings = ReleaseSettings.model_validate(config["liftoff:release"], by_alias=True, by_name=False)
    per_month = config["liftoff:usage"]["requestsPerMonth"]
    reachable = [step_requests(settings, per_month, p) >= settings.min_requests for p in settings.steps]
    assert rendering.resources
    assert all(reachable) or settings.on_inconclusive == "promote", (stack, reachable)


def test_prod_judges_its_first_step_at_its_traffic_with_room_for_a_quiet_hour(prod: Rendering) -> None:
    config = stack_config("prod")
    settings = ReleaseSettings.model_validate(config["liftoff:release"], by_alias=True, by_name=False)
    assert settings.on_inconclusive == "rollback" and settings.min_requests >= 200
    first = step_requests(settings, config["liftoff:usage"]["requestsPerMonth"], settings.steps[0])
    # At the mean rate the first step sees well over minRequests, so a release in an hour
    # quieter than the month's mean is still judged.
    assert prod.resources and first >= Fraction(3, 2) * settings.min_requests, float(first)


def test_prod_at_a_tenth_of_its_traffic_is_refused_naming_the_keys_and_numbers(registrations) -> None:
    tenth = stack_config("prod")["liftoff:usage"]["requestsPerMonth"] // 10
    with pytest.raises(ConfigError) as caught:
        render_stack("prod", usage("prod", requestsPerMonth=tenth))
    assert registrations == []
    [problem] = [p for p in caught.value.problems if "requestsPerMonth" in p]
    assert problem.startswith("liftoff:release.minRequests: 200 requests cannot be reached in the first step")
    for part in (
        "(30 %)",
        "liftoff:usage.requestsPerMonth declares: 200,000 requests a month",
        "over a 730-hour month",
        "maxSoakSeconds 1,500 s",
        "about 34.2 requests",
        "onInconclusive rollback",
        "raise maxSoakSeconds to 8,760",
        "lower minRequests to 34",
        "set onInconclusive: promote",
    ):
        assert part in problem, (part, problem)


def test_prod_at_a_tenth_of_its_traffic_renders_when_it_promotes_an_inconclusive_step() -> None:
    tenth = stack_config("prod")["liftoff:usage"]["requestsPerMonth"] // 10
    overrides = {**usage("prod", requestsPerMonth=tenth), **release_keys("prod", onInconclusive="promote")}
    assert render_stack("prod", overrides).resources


def test_the_old_prod_settings_are_refused_at_prods_own_traffic(registrations) -> None:
    old = release_keys("prod", steps=[10, 50, 100])
    del old["liftoff:release"]["maxSoakSeconds"]
    with pytest.raises(ConfigError, match=r"first step \(10 %\).* 900 s \(unset: 3 × soakSeconds\)"):
        render_stack("prod", old)
    assert registrations == []


def test_a_stack_file_that_declares_no_traffic_is_not_held_to_the_cost_estimates_default() -> None:
    overrides = {"liftoff:usage": {"supabasePlan": "pro"}, **release_keys("prod", maxSoakSeconds=300)}
    assert render_stack("prod", overrides).resources


# --- The rule ---------------------------------------------------------------------------------


def test_the_month_is_the_cost_estimates() -> None:
    # One month, defined once in the usage settings: the rule and the estimate both count 730 hours.
    context = Context({}, UsageSettings(), load_prices())
    assert seconds_per_month() == context.month == 730 * 3600


def test_a_step_that_reaches_min_requests_exactly_is_judged_one_request_a_month_less_is_not() -> None:
    settings = ReleaseSettings(steps=(10, 100), soak_seconds=300, max_soak_seconds=1000, min_requests=100)
    # The traffic at which the 10 % step sees exactly minRequests within maxSoakSeconds.
    exact = seconds_per_month() * settings.min_requests * 100 / (10 * settings.wait_limit_seconds)
    assert exact.denominator == 1
    assert release_traffic_problems(settings, UsageSettings(requests_per_month=int(exact))) == []
    [problem] = release_traffic_problems(settings, UsageSettings(requests_per_month=int(exact) - 1))
    assert "the first step (10 %)" in problem and "about 100.0 requests" in problem
    assert "raise maxSoakSeconds to 1,001" in problem and "lower minRequests to 99" in problem
    assert "give the first step 11 % or more" in problem


def test_promote_on_inconclusive_is_accepted_at_any_traffic() -> None:
    settings = ReleaseSettings(min_requests=1000, on_inconclusive="promote")
    assert release_traffic_problems(settings, UsageSettings(requests_per_month=0)) == []


def test_only_the_ways_out_that_can_work_are_offered() -> None:
    # A single step already takes every request, and no soak within its 4-hour limit gets there.
    settings = ReleaseSettings(steps=(100,), soak_seconds=300, min_requests=600)
    [problem] = release_traffic_problems(settings, UsageSettings(requests_per_month=100_000))
    assert "cannot be reached in the first step (100 %)" in problem
    assert "give the first step" not in problem and "raise maxSoakSeconds" not in problem
    assert problem.endswith("lower minRequests to 34 or set onInconclusive: promote")
    [silent] = release_traffic_problems(settings, UsageSettings(requests_per_month=0))
    assert silent.endswith("as inconclusive; lower minRequests to 0 or set onInconclusive: promote")


# --- The rule against the controller ----------------------------------------------------------


def run_release(
    settings: ReleaseSettings,
    per_second: float,
    jobs_per_second: float = 2.0,
    delay: float = CloudMonitoringMetrics.delay_seconds,
) -> tuple[int, tuple[str, ...], int]:
    """A release of B beside A at a steady `per_second`: exit code, breached gates, B's top share."""
    world = World(next_release=A, delay_seconds=delay)
    world.requests_per_second = per_second
    world.jobs_per_second = jobs_per_second
    assert world.controller(settings).release().exit_code == EXIT_OK  # A, a first deploy
    world.next_release = B
    report = world.controller(settings).release()
    return report.exit_code, report.breached, max(state.get(B.api, 0) for state in world.history)


def holds_against_the_controller(
    part: str, per_month: int, first: int, soak: int, extra: int, scale: Fraction
) -> None:
    """What the rule accepts for `part` ("requests" or "jobs"), the controller judges; what it
    refuses rolls back as inconclusive at the first step. The other part's minimum is 0: every
    step has it, so each property is about its own part alone."""
    jobs = part == "jobs"
    wait = soak + extra
    rate = Fraction(per_month) / seconds_per_month()
    minimum = int(rate * first / 100 * wait * scale)
    settings = ReleaseSettings(
        steps=(first, 100),
        soak_seconds=soak,
        max_soak_seconds=wait,
        min_requests=0 if jobs else minimum,
        min_job_attempts=minimum if jobs else 0,
    )
    expected = step_requests(settings, per_month, first)
    # The controller decides at its first poll past maxSoakSeconds (+ the delay), so it may read up
    # to one poll more than the rule counts on; and the in-memory metrics round down. Cases inside
    # that band are left out: each side of it is asserted.
    poll = max(1, soak // 5) + 1
    assume(expected >= minimum + 1 or expected * (wait + poll) / wait < minimum)
    if jobs:
        refused = release_traffic_problems(settings, UsageSettings(jobs_per_month=per_month))
        # With no metrics delay: a step that also waits out Cloud Monitoring's delay for the API's
        # requests counts attempts that much longer, so in the cloud the rule errs on refusing.
        code, breached, top = run_release(settings, 20.0, float(rate), delay=0.0)
    else:
        refused = release_traffic_problems(settings, UsageSettings(requests_per_month=per_month))
        code, breached, top = run_release(settings, float(rate))
    key, gate = ("minJobAttempts", "min-job-attempts") if jobs else ("minRequests", "min-requests")
    if refused:
        assert key in refused[0]
        assert (code, breached, top) == (EXIT_ROLLED_BACK, (gate,), first)
    else:
        assert (code, top) == (EXIT_OK, 100), breached


@given(
    per_month=st.integers(200_000, 20_000_000),
    first=st.integers(1, 99),
    soak=st.integers(240, 600),
    extra=st.integers(0, 900),
    # minRequests as a multiple of what the first step sees: as many judged steps as refused ones.
    scale=st.fractions(0, 4, max_denominator=100),
)
@settings(
    max_examples=100, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.filter_too_much]
)
def test_what_the_rule_accepts_the_controller_judges_and_what_it_refuses_rolls_back(
    per_month: int, first: int, soak: int, extra: int, scale: Fraction
) -> None:
    holds_against_the_controller("requests", per_month, first, soak, extra, scale)


@given(
    per_month=st.integers(20_000, 2_000_000),
    first=st.integers(1, 99),
    soak=st.integers(240, 600),
    extra=st.integers(0, 900),
    scale=st.fractions(0, 4, max_denominator=100),
)
@settings(
    max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.filter_too_much]
)
def test_what_the_rule_accepts_for_the_worker_the_controller_judges_on_its_attempts(
    per_month: int, first: int, soak: int, extra: int, scale: Fraction
) -> None:
    holds_against_the_controller("jobs", per_month, first, soak, extra, scale)


def test_declared_probes_make_a_quiet_worker_judgeable_within_their_budget() -> None:
    quiet = ReleaseSettings(steps=(10, 100), soak_seconds=300, max_soak_seconds=900, min_job_attempts=20)
    usage = UsageSettings(jobs_per_month=1_000)
    [problem] = release_traffic_problems(quiet, usage)
    assert problem.startswith("liftoff:release.minJobAttempts: 20 finished attempts cannot be reached")
    probing = quiet.model_copy(update={"synthetic": SyntheticSettings(rate=1, budget=5_000)})
    assert release_traffic_problems(probing, usage) == []
    # A budget too small to fill the step is no way out.
    stingy = quiet.model_copy(update={"synthetic": SyntheticSettings(rate=1, budget=100)})
    [still] = release_traffic_problems(stingy, usage)
    assert "plus half of 100 probes at its share" in still


def test_no_way_out_turns_the_worker_gates_off() -> None:
    settings = ReleaseSettings(steps=(10, 100), soak_seconds=300, max_soak_seconds=900, min_job_attempts=20)
    [few] = release_traffic_problems(settings, UsageSettings(jobs_per_month=100_000))
    assert "lower minJobAttempts to 3, declare synthetic traffic" in few
    [none] = release_traffic_problems(settings, UsageSettings(jobs_per_month=100))
    assert "lower minJobAttempts" not in none and "declare synthetic traffic" in none
