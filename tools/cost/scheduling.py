"""Cloud Scheduler: how often a cron schedule fires, what each scheduler job calls, and its price."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, timedelta
from typing import Any

from tools.cost.model import Context, Line
from tools.cost.prices import CostError

SCHEDULER_JOB = "gcp:cloudscheduler/job:Job"


def _cron_field(text: str, low: int, high: int) -> set[int]:
    """The values one field of a unix-cron expression (the format Cloud Scheduler takes:
    https://cloud.google.com/scheduler/docs/configuring/cron-job-schedules) selects."""
    values: set[int] = set()
    for part in text.split(","):
        body, _, step = part.partition("/")
        if body == "*":
            start, end = low, high
        elif "-" in body:
            start, end = (int(x) for x in body.split("-", 1))
        else:  # "5" is one value; "5/15" runs from 5 to the end in steps of 15
            start = int(body)
            end = high if step else start
        if not (low <= start <= end <= high):
            raise ValueError(part)
        values.update(range(start, end + 1, int(step) if step else 1))
    return values


def runs_per_month(schedule: str) -> float:
    """How often a 5-field cron expression fires in an average month (a 365-day year over 12)."""
    try:
        minute, hour, dom, month, dow = schedule.split()
        minutes, hours = _cron_field(minute, 0, 59), _cron_field(hour, 0, 23)
        days, months = _cron_field(dom, 1, 31), _cron_field(month, 1, 12)
        weekdays = {d % 7 for d in _cron_field(dow, 0, 7)}
    except ValueError as exc:
        raise CostError(f"cannot count the runs of cron schedule {schedule!r}") from exc
    # When both day fields are restricted a day matches either (crontab(5): "the command will be
    # run when either field matches the current time").
    either = dom != "*" and dow != "*"
    matching = 0
    for offset in range(365):
        day = date(2025, 1, 1) + timedelta(days=offset)
        by_dom, by_dow = day.day in days, (day.isoweekday() % 7) in weekdays
        if day.month in months and ((by_dom or by_dow) if either else (by_dom and by_dow)):
            matching += 1
    return matching * len(minutes) * len(hours) / 12


def reconciles(service: str, ctx: Context) -> float:
    """Runs a month of the Cloud Scheduler jobs that ask this scaler to reconcile (components/scaler.py
    names its job `<service>-schedule` and points it at the service's /reconcile)."""
    return sum(
        runs_per_month(s["inputs"]["schedule"])
        for s in ctx.of_type(SCHEDULER_JOB)
        if s["inputs"].get("name") == f"{service}-schedule"
        or (_target(s).endswith("/reconcile") and f"//{service}-" in _target(s))
    )


def _target(scheduler_job: Mapping[str, Any]) -> str:
    """The URL a Cloud Scheduler job calls."""
    return str((scheduler_job["inputs"].get("httpTarget") or {}).get("uri", ""))


def scheduled_runs(job_name: str, ctx: Context) -> float:
    """Runs a month of the Cloud Scheduler jobs that start this Cloud Run job."""
    return sum(
        runs_per_month(s["inputs"]["schedule"])
        for s in ctx.of_type(SCHEDULER_JOB)
        if _target(s).endswith(f"/jobs/{job_name}:run")
    )


def _count(n: float) -> str:
    """A count as the lines write it: whole with separators from 1,000, else to 4 significant digits."""
    return f"{n:,.0f}" if n >= 1000 else f"{n:.4g}"


def scheduler_jobs(resources: list[Mapping[str, Any]], ctx: Context) -> list[Line]:
    return [
        Line(
            f"scheduler/{r['inputs']['name']}",
            "Cloud Scheduler",
            f"Job {r['inputs']['name']}",
            f"billed per job, not per run ({_count(runs_per_month(r['inputs']['schedule']))} runs a month)",
            (ctx.charge("scheduler.job", 1, r["inputs"].get("region", "*")),),
        )
        for r in resources
    ]
