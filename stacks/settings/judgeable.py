"""Release settings held to the stack's declared traffic and pool: a release that can never be judged
is refused."""

from __future__ import annotations

import math
from fractions import Fraction

from app.scaler.policy import step_floor
from stacks.settings.base import NAMESPACE
from stacks.settings.release import KEY as RELEASE_KEY
from stacks.settings.release import MAX_SOAK_SECONDS, ReleaseSettings
from stacks.settings.usage import HOURS_PER_MONTH, UsageSettings
from stacks.settings.workloads import WorkerSettings

# --- Release settings at the declared traffic: a release that can never be judged is refused. ---


def seconds_per_month() -> Fraction:
    """The month the usage is declared in and the cost estimate counts (HOURS_PER_MONTH), in seconds."""
    return Fraction(HOURS_PER_MONTH * 3600)


def release_traffic_problems(release: ReleaseSettings, usage: UsageSettings) -> list[str]:
    """The first release step, if it could not reach its minimums at the stack's declared traffic.

    How a step is judged (release/controller.py, `Controller._soak`, `_wait` and
    `_inconclusive`; release/gates.py, `evaluate` and `evaluate_jobs`): the candidate API
    revision's requests count from when its share moves, and so do the candidate worker
    revision's finished attempts; the gates wait until they reach `minRequests` and
    `minJobAttempts`, and a step still short once `maxSoakSeconds` of its traffic is readable
    (three soaks when unset: `wait_limit_seconds`; the controller waits out Cloud Monitoring's
    delay on top) is inconclusive. At the mean rates the stack declares, the candidate then has
    requestsPerMonth (jobsPerMonth) / seconds a month × the step's share × maxSoakSeconds of
    them. Every step waits as long, and steps rise strictly (`ReleaseSettings.steps`), so the
    first is the quietest: when it can be judged, all can.

    Synthetic probes (`synthetic`) count too, as the controller sends them: from the first poll
    that finds the step short, `rate` a second, all to the candidate API's tag URL, half of them
    jobs (when requests and jobs are both short) taken at the candidate worker's share, and never
    more than `budget` in the release.

    Each part is checked where the stack file declares its traffic (the defaults are the cost
    estimate's placeholders, not the stack's traffic) and rolls an inconclusive step back:
    `promote` is the stack's own choice.
    """
    if release.on_inconclusive == "promote":
        return []
    problems = []
    probes = _probes(release)
    if "requests_per_month" in usage.model_fields_set:
        rate = usage.requests_per_month / seconds_per_month()
        seen = _step_requests(rate, release.steps[0], release.wait_limit_seconds) + probes
        if seen < release.min_requests:
            problems.append(_unjudgeable(release, usage.requests_per_month, rate))
    if "jobs_per_month" in usage.model_fields_set and release.min_job_attempts > 0:
        rate = usage.jobs_per_month / seconds_per_month()
        first, wait = release.steps[0], release.wait_limit_seconds
        seen = _step_requests(rate, first, wait) + probes / 2 * first / 100
        if seen < release.min_job_attempts:
            problems.append(
                f"{RELEASE_KEY}.minJobAttempts: {release.min_job_attempts:,} finished attempts cannot be"
                f" reached by the candidate worker in the first step ({first} %) at the jobs"
                f" {NAMESPACE}:usage.jobsPerMonth declares: {usage.jobs_per_month:,} a month"
                f" ({float(rate):.3g} a second) × {first} % × maxSoakSeconds {wait:,} s"
                f"{_with_probes(probes)} is about {float(seen):,.1f}, so with onInconclusive rollback"
                f" every release changing the worker would roll back as inconclusive;"
                f" {_lower_attempts(seen)}declare synthetic traffic ({RELEASE_KEY}.synthetic), or set"
                " onInconclusive: promote"
            )
    return problems


def split_instance_problems(worker: WorkerSettings, release: ReleaseSettings) -> list[str]:
    """A release step whose split the pool's ceiling cannot give each revision an instance of.

    A worker pool's instances go to its revisions in proportion to the split (app/scaler/policy.py,
    `instances_for_share`); at a step of p % the candidate and the stable revision each need one, so
    the pool must be able to run `step_floor(p)` instances, or one of them runs no job and the
    step is judged on nothing. The scaler raises the count to that floor whenever there is work;
    a fixed count must already be there.
    """
    split_steps = [p for p in release.steps if p < 100]
    if not split_steps:
        return []
    needed = max(step_floor(p) for p in split_steps)
    if worker.ceiling >= needed:
        return []
    step = min(split_steps, key=lambda p: min(p, 100 - p))
    key = "maxInstances" if worker.on_demand else "instances"
    return [
        f"{NAMESPACE}:worker.{key}: {worker.ceiling} instance(s) cannot give both revisions of the"
        f" {RELEASE_KEY}.steps {step} % step an instance: the pool's instances are split in proportion,"
        f" so a {min(step, 100 - step)} % share needs {needed}; raise {key} to {needed} or change the steps"
    ]


def _lower_attempts(seen: Fraction) -> str:
    """The way out by a lower minJobAttempts, when one would still judge something (0 would not)."""
    return f"lower minJobAttempts to {math.floor(seen):,}, " if seen >= 1 else ""


def _probes(release: ReleaseSettings) -> Fraction:
    """The probes the controller can send in the first step: from its first poll to the end of
    maxSoakSeconds at `rate`, within the budget (0 when none are declared)."""
    synthetic = release.synthetic
    if not synthetic.enabled:
        return Fraction(0)
    poll = max(1.0, release.soak_seconds / 5)
    seconds = max(0.0, release.wait_limit_seconds - poll)
    return min(Fraction(synthetic.rate) * Fraction(seconds), Fraction(synthetic.budget))


def _with_probes(probes: Fraction) -> str:
    return f" plus half of {float(probes):,.0f} probes at its share" if probes else ""


def _step_requests(rate: Fraction, percent: int, seconds: int) -> Fraction:
    """The candidate's requests in `seconds` of a step at `percent` of `rate` requests a second."""
    return rate * percent / 100 * seconds


def _unjudgeable(release: ReleaseSettings, per_month: int, rate: Fraction) -> str:
    """The problem: the keys, the numbers, and each way out with the value that would do."""
    first, wait = release.steps[0], release.wait_limit_seconds
    unset = "" if release.max_soak_seconds is not None else " (unset: 3 × soakSeconds)"
    return (
        f"{RELEASE_KEY}.minRequests: {release.min_requests:,} requests cannot be reached in the first"
        f" step ({first} %) at the traffic {NAMESPACE}:usage.requestsPerMonth declares: {per_month:,}"
        f" requests a month ({float(rate):.3g} a second over a {HOURS_PER_MONTH}-hour month) × {first} %"
        f" × maxSoakSeconds {wait:,} s{unset} is about {float(_step_requests(rate, first, wait)):,.1f}"
        f" requests, so with onInconclusive rollback every release would roll back as inconclusive;"
        f" {_ways_out(release, rate)}"
    )


def _ways_out(release: ReleaseSettings, rate: Fraction) -> str:
    """What would let the first step reach `minRequests`, each at the value that just does."""
    first, wait, needed = release.steps[0], release.wait_limit_seconds, release.min_requests
    ways = []
    if rate > 0:
        # The rule solved for the soak, then for the share: offered where the key allows it.
        longer = math.ceil(needed / _step_requests(rate, first, 1))
        if longer <= MAX_SOAK_SECONDS:
            ways.append(f"raise maxSoakSeconds to {longer:,}")
        larger = math.ceil(needed / _step_requests(rate, 1, wait))
        if larger <= 100:
            ways.append(f"give the first step {larger} % or more")
    ways.append(f"lower minRequests to {math.floor(_step_requests(rate, first, wait)):,}")
    return ", ".join(ways) + " or set onInconclusive: promote"
