"""The gates: absolute limits, limits against stable, the minimum request count, and early breach."""

from __future__ import annotations

import pytest

from stacks.release.config import ReleaseSettings
from stacks.release.gates import State, Window, evaluate

pytestmark = pytest.mark.unit

LIMITS = ReleaseSettings(
    min_requests=100,
    max_error_ratio=0.02,
    max_p95_latency_ms=1000,
    max_error_ratio_increase=0.01,
    max_latency_ratio=1.5,
)
HEALTHY = Window(requests=500, errors=2, p95_ms=120.0)


def test_a_healthy_candidate_passes_every_gate():
    verdict = evaluate(HEALTHY, Window(4500, 10, 110.0), LIMITS)
    assert verdict.state is State.PASS
    assert [g.name for g in verdict.gates] == [
        "error-ratio",
        "p95-latency-ms",
        "error-ratio-vs-stable",
        "p95-latency-vs-stable-ms",
    ]


def test_too_few_requests_waits_without_judging():
    verdict = evaluate(Window(40, 0, 90.0), Window(4000, 0, 90.0), LIMITS)
    assert verdict.state is State.WAIT
    assert verdict.breached == ("min-requests",)


def test_errors_past_the_whole_budget_breach_before_min_requests():
    # 3 errors are already more than 2 % of the 100 requests the step needs.
    verdict = evaluate(Window(20, 3, 90.0), None, LIMITS)
    assert verdict.state is State.BREACH
    assert verdict.breached == ("error-ratio",)


@pytest.mark.parametrize(
    ("candidate", "stable", "gate"),
    [
        (Window(500, 25, 100.0), None, "error-ratio"),
        (Window(500, 0, 1500.0), None, "p95-latency-ms"),
        # 1.8 % is under the absolute 2 %, but stable serves at 0.2 %: more than 1 point worse.
        (Window(500, 9, 100.0), Window(5000, 10, 100.0), "error-ratio-vs-stable"),
        (Window(500, 0, 400.0), Window(5000, 0, 200.0), "p95-latency-vs-stable-ms"),
    ],
)
def test_each_gate_breaches_on_its_own(candidate, stable, gate):
    verdict = evaluate(candidate, stable, LIMITS)
    assert verdict.state is State.BREACH
    assert verdict.breached == (gate,)


def test_stable_without_enough_requests_is_no_baseline():
    verdict = evaluate(Window(500, 9, 100.0), Window(50, 0, 10.0), LIMITS)
    assert verdict.state is State.PASS
    assert "error-ratio-vs-stable" not in [g.name for g in verdict.gates]


def test_small_latencies_are_not_a_regression():
    # 30 ms against 12 ms is 2.5x, but within the noise floor.
    verdict = evaluate(Window(500, 0, 30.0), Window(5000, 0, 12.0), LIMITS)
    assert verdict.state is State.PASS
