"""The canary gates: one verdict from the candidate's and the stable revision's metrics.

The API is judged on its requests, the worker on its jobs' attempts. The same code judges the
cloud (Cloud Monitoring per `revision_name`; Postgres per `generation_logs.revision`) and the
rehearsal (each local revision's Prometheus `/metrics`; the same Postgres query); only the
reading of the windows differs.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from stacks.settings.release import ReleaseSettings

# Below this, a p95 "1.5x the stable one" is noise (5 ms against 8 ms), not a regression.
LATENCY_NOISE_FLOOR_MS = 50.0
JOB_NOISE_FLOOR_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class Window:
    """What one revision served over a step: requests, 5xx responses, and p95 latency."""

    requests: int
    errors: int
    p95_ms: float | None

    @property
    def error_ratio(self) -> float:
        return self.errors / self.requests if self.requests else 0.0


@dataclass(frozen=True, slots=True)
class JobWindow:
    """What one worker revision's attempts did over a step, read from `generation_logs`.

    `attempts` counts the attempts that ran to an end of their own: succeeded, failed, retried or
    lost with an expired lease. Cancelled ones (a tenant's choice) and released ones (given back
    at a shutdown, as a split moves) say nothing about the revision and are left out.
    """

    attempts: int
    failures: int  # failed or retried
    expired: int  # lost: the worker stopped heartbeating and the lease ran out
    p95_seconds: float | None

    @property
    def failure_ratio(self) -> float:
        return (self.failures + self.expired) / self.attempts if self.attempts else 0.0


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
    """The gates of one step, and what they add up to; the windows they were judged on (the
    API's, the worker's, or both, as the release changed them)."""

    state: State
    gates: tuple[Gate, ...]
    candidate: Window | None = None
    stable: Window | None = None
    jobs: JobWindow | None = None
    stable_jobs: JobWindow | None = None

    @property
    def breached(self) -> tuple[str, ...]:
        return tuple(g.name for g in self.gates if not g.passed)

    @property
    def waiting(self) -> tuple[str, ...]:
        """What a step still waits for: "api" (minRequests), "worker" (minJobAttempts)."""
        if self.state is not State.WAIT:
            return ()
        names = {g.name for g in self.gates if not g.passed}
        return tuple(
            part for part, gate in (("api", "min-requests"), ("worker", "min-job-attempts")) if gate in names
        )


def combine(verdicts: list[Verdict]) -> Verdict:
    """The API's and the worker's verdicts as one: a breach of either is a breach; a step passes
    only when both pass."""
    if not verdicts:
        raise ValueError("a release changes the API, the worker or both: nothing to judge")
    states = {v.state for v in verdicts}
    state = State.BREACH if State.BREACH in states else State.WAIT if State.WAIT in states else State.PASS
    if state is State.BREACH:
        # Only what breached is named; a part still waiting has nothing to say yet.
        gates = tuple(g for v in verdicts if v.state is State.BREACH for g in v.gates)
    else:
        gates = tuple(g for v in verdicts for g in v.gates)
    merged = Verdict(state, gates)
    for v in verdicts:
        merged = Verdict(
            state,
            gates,
            candidate=v.candidate or merged.candidate,
            stable=v.stable or merged.stable,
            jobs=v.jobs or merged.jobs,
            stable_jobs=v.stable_jobs or merged.stable_jobs,
        )
    return merged


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


def evaluate_jobs(
    candidate: JobWindow, stable: JobWindow | None, limits: ReleaseSettings, share: int | None = None
) -> Verdict:
    """Judge the candidate worker's attempts against absolute limits and the stable worker's.

    As for requests, a failure share already past the limit of the minimum sample is a breach
    before the sample is complete; an expired lease past `maxExpiredLeases` is one at once (a
    worker that loses its leases makes every job it touches wait a whole lease). With its
    instance `share` (percent) and the stable worker's attempts, a candidate that ends far
    fewer attempts than its share of them breaches too: a worker that crashes or claims nothing
    fails no attempt, and would otherwise only ever be waited for.
    """
    minimum = limits.min_job_attempts
    early_ratio = (candidate.failures + candidate.expired) / max(minimum, candidate.attempts, 1)
    early = [
        Gate(
            "worker-failure-ratio",
            early_ratio,
            limits.max_job_failure_ratio,
            early_ratio <= limits.max_job_failure_ratio,
        ),
        Gate(
            "worker-expired-leases",
            candidate.expired,
            limits.max_expired_leases,
            candidate.expired <= limits.max_expired_leases,
        ),
    ]
    if not all(g.passed for g in early):
        return Verdict(
            State.BREACH, tuple(g for g in early if not g.passed), jobs=candidate, stable_jobs=stable
        )
    starved = _starved(candidate, stable, limits, share)
    if starved is not None:
        return Verdict(State.BREACH, (starved,), jobs=candidate, stable_jobs=stable)
    if candidate.attempts < minimum:
        waiting = Gate("min-job-attempts", candidate.attempts, minimum, passed=False)
        return Verdict(State.WAIT, (waiting,), jobs=candidate, stable_jobs=stable)
    gates = [*early, *_job_duration(candidate, limits), *_jobs_against_stable(candidate, stable, limits)]
    state = State.PASS if all(g.passed for g in gates) else State.BREACH
    return Verdict(state, tuple(gates), jobs=candidate, stable_jobs=stable)


# A candidate ending fewer than this fraction of the attempts its instance share would end,
# once that share comes to twice minJobAttempts, is not working: far outside the noise of how
# jobs spread over instances.
STARVED_FRACTION = 0.25


def _starved(
    candidate: JobWindow, stable: JobWindow | None, limits: ReleaseSettings, share: int | None
) -> Gate | None:
    """The breached `worker-attempts-vs-share` gate, or None."""
    if (
        stable is None
        or share is None
        or not 0 < share < 100
        or candidate.attempts >= limits.min_job_attempts
    ):
        return None
    expected = stable.attempts * share / (100 - share)
    if expected < 2 * max(limits.min_job_attempts, 1):
        return None
    floor = expected * STARVED_FRACTION
    if candidate.attempts >= floor:
        return None
    return Gate("worker-attempts-vs-share", candidate.attempts, floor, passed=False)


def _job_duration(candidate: JobWindow, limits: ReleaseSettings) -> list[Gate]:
    if candidate.p95_seconds is None:
        return []
    limit = limits.max_job_p95_seconds
    return [Gate("worker-p95-duration-seconds", candidate.p95_seconds, limit, candidate.p95_seconds <= limit)]


def _jobs_against_stable(
    candidate: JobWindow, stable: JobWindow | None, limits: ReleaseSettings
) -> list[Gate]:
    if stable is None or stable.attempts < limits.min_job_attempts:
        return []
    allowed = stable.failure_ratio + limits.max_job_failure_ratio_increase
    gates = [
        Gate(
            "worker-failure-ratio-vs-stable",
            candidate.failure_ratio,
            allowed,
            candidate.failure_ratio <= allowed,
        )
    ]
    if candidate.p95_seconds is not None and stable.p95_seconds is not None:
        # Below a second, a ratio of two fast jobs' durations is noise, as LATENCY_NOISE_FLOOR_MS is.
        allowed_s = max(
            stable.p95_seconds * limits.max_job_duration_ratio, stable.p95_seconds + JOB_NOISE_FLOOR_SECONDS
        )
        gates.append(
            Gate(
                "worker-p95-duration-vs-stable-seconds",
                candidate.p95_seconds,
                allowed_s,
                candidate.p95_seconds <= allowed_s,
            )
        )
    return gates
