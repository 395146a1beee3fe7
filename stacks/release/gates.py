"""The canary gates: one verdict from the candidate's and the stable revision's request metrics.

The same code judges the cloud (Cloud Monitoring, per `revision_name`) and the rehearsal (each
local revision's Prometheus `/metrics`); only the reading of the windows differs.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from stacks.release.config import ReleaseSettings

# Below this, a p95 "1.5x the stable one" is noise (5 ms against 8 ms), not a regression.
LATENCY_NOISE_FLOOR_MS = 50.0


@dataclass(frozen=True, slots=True)
class Window:
    """What one revision served over a step: requests, 5xx responses, and p95 latency."""

    requests: int
    errors: int
    p95_ms: float | None

    @property
    def error_ratio(self) -> float:
        return self.errors / self.requests if self.requests else 0.0


class State(StrEnum):
    """A step's verdict."""

    PASS = "pass"  # noqa: S105 (a verdict, not a password)
    BREACH = "breach"
    WAIT = "wait"  # not enough requests yet to judge


@dataclass(frozen=True, slots=True)
class Gate:
    """One gate's measurement against its limit."""

    name: str
    measured: float
    limit: float
    passed: bool

    def describe(self) -> str:
        mark = "ok" if self.passed else "BREACHED"
        return f"{self.name}: {self.measured:.4g} (limit {self.limit:.4g}) {mark}"


@dataclass(frozen=True, slots=True)
class Verdict:
    """The gates of one step, and what they add up to."""

    state: State
    gates: tuple[Gate, ...]
    candidate: Window
    stable: Window | None

    @property
    def breached(self) -> tuple[str, ...]:
        return tuple(g.name for g in self.gates if not g.passed)


def evaluate(candidate: Window, stable: Window | None, limits: ReleaseSettings) -> Verdict:
    """Judge the candidate against absolute limits and, where it served enough, the stable revision."""
    gates = [_early_errors(candidate, limits)]
    if not gates[0].passed:
        return Verdict(State.BREACH, tuple(gates), candidate, stable)
    if candidate.requests < limits.min_requests:
        waiting = Gate("min-requests", candidate.requests, limits.min_requests, passed=False)
        return Verdict(State.WAIT, (waiting,), candidate, stable)
    gates = [
        Gate(
            "error-ratio",
            candidate.error_ratio,
            limits.max_error_ratio,
            candidate.error_ratio <= limits.max_error_ratio,
        ),
        *_latency(candidate, limits),
        *_against_stable(candidate, stable, limits),
    ]
    state = State.PASS if all(g.passed for g in gates) else State.BREACH
    return Verdict(state, tuple(gates), candidate, stable)


def _early_errors(candidate: Window, limits: ReleaseSettings) -> Gate:
    """The 5xx ratio over at least min_requests: errors already past the limit of the minimum sample.

    Until the candidate has served min_requests, its errors are counted against that many
    requests, as if every request still to come succeeded: a ratio already over the limit then
    can only be a breach, and waiting would send more users to the revision. Once min_requests
    are in, this is the plain error ratio, judged at every check of the step.
    """
    ratio = candidate.errors / max(limits.min_requests, candidate.requests, 1)
    return Gate("error-ratio", ratio, limits.max_error_ratio, passed=ratio <= limits.max_error_ratio)


def _latency(candidate: Window, limits: ReleaseSettings) -> list[Gate]:
    if candidate.p95_ms is None:
        return []
    limit = float(limits.max_p95_latency_ms)
    return [Gate("p95-latency-ms", candidate.p95_ms, limit, candidate.p95_ms <= limit)]


def _against_stable(candidate: Window, stable: Window | None, limits: ReleaseSettings) -> list[Gate]:
    if stable is None or stable.requests < limits.min_requests:
        return []
    allowed = stable.error_ratio + limits.max_error_ratio_increase
    gates = [Gate("error-ratio-vs-stable", candidate.error_ratio, allowed, candidate.error_ratio <= allowed)]
    if candidate.p95_ms is not None and stable.p95_ms is not None:
        allowed_ms = max(stable.p95_ms * limits.max_latency_ratio, stable.p95_ms + LATENCY_NOISE_FLOOR_MS)
        passed = candidate.p95_ms <= allowed_ms
        gates.append(Gate("p95-latency-vs-stable-ms", candidate.p95_ms, allowed_ms, passed))
    return gates
