"""What a stack costs a month, estimated offline from its rendered plan.

    python stacks/cost.py --stack prod [--format table|markdown|json] [--free-tiers] [--plan FILE]

The plan is the one `stacks/plan.py render` writes (rendered here unless --plan names one); the
prices come from stacks/prices.yaml, each with its source and the day it was read; the usage
(requests, jobs, releases a month) from the stack file's `liftoff:usage`. No credentials.
Beside the total at that usage it prices an idle month: the same plan with no requests, jobs,
busy periods or releases.

Free tiers belong to a billing account, not to a stack: they are left out unless --free-tiers
asks to apply them to this stack as if it were alone on its account.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import textwrap
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import jsonschema
import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: stacks/ is on the path, the project root is not
    sys.path.insert(0, str(ROOT))

from app.settings import Settings as AppContract  # noqa: E402
from components.jobrun import JobRun  # noqa: E402
from components.supabase_api import SupabaseProject  # noqa: E402
from stacks.render import stack_config  # noqa: E402
from stacks.settings import NAMESPACE, PRICES, USAGE_KEYS, UsageSettings, usage_settings  # noqa: E402

SCHEMA = ROOT / "stacks" / "prices.schema.json"
# Measured in BENCHMARKS.md ("Worker", 2026-11-23): an idle worker's Redis commands an hour, and
# the commands one job costs (submitter and worker together). tests/stacks/test_cost.py keeps
# these in step with the table.
WORKER_IDLE_COMMANDS_PER_HOUR = 15
REDIS_COMMANDS_PER_JOB = 1.05
# The API's wake (app/core/wake.py) sets a Redis key (SET NX) for every job it accepts, to send at
# most one wake per WORKER_WAKE_SECONDS: one more command a job where an on-demand pool is woken.
WAKE_COMMANDS_PER_JOB = 1
# "Cloud Run charges you only for the resources you use, rounded up to the nearest 100 millisecond"
# (https://cloud.google.com/run/pricing): a scaler request is billed in whole tenths of a second.
REQUEST_BILLING_MS = 100
# The scaler is asked to reconcile each minute, and Cloud Run keeps an idle instance for up to
# 15 minutes (https://cloud.google.com/run/docs/about-instance-autoscaling), so its one instance
# stays up: it is taken to start once a day (Cloud Run may stop an instance at any time; an
# estimate) and once a release, which deploys a new revision of it.
SCALER_STARTS_PER_DAY = 1
# A new Supabase project's compute size when the plan names none (Free runs on Nano, paid plans
# start on Micro): https://supabase.com/docs/guides/platform/manage-your-usage/compute
DEFAULT_COMPUTE = {"free": "nano", "pro": "micro"}
FREE_TIERS_NOTE = "Free tiers are per billing account, shared by every stack and project on it: {state}."
# An idle month: the same plan priced with these usage keys at zero. What is left is what the stack
# costs standing still: minimum instances and floors, the scaler's scheduled reconciles, scheduled
# jobs, stored data, fees.
IDLE_USAGE = (
    "requests_per_month",
    "api_instance_starts_per_month",
    "jobs_per_month",
    "job_bursts_per_month",
    "releases_per_month",
)
IDLE_ROW = "no requests, jobs or releases"
IDLE_NOTE = (
    "Total: a month at the usage the stack file declares (liftoff:usage). Idle month: the same stack"
    " with no requests, jobs, busy periods or releases."
)


class CostError(ValueError):
    """The plan holds something the price file cannot price; the message says what."""


@dataclass(frozen=True)
class Price:
    """One price from the price file."""

    id: str
    description: str
    unit: str
    usd: float | None
    regions: tuple[str, ...]
    source: str
    checked: str
    basis: str
    included: float = 0.0
    free_amount: float = 0.0
    free_scope: str | None = None

    def applies_in(self, region: str) -> bool:
        return "*" in self.regions or region in self.regions


@dataclass(frozen=True)
class PriceBook:
    """The validated price file."""

    version: int
    checked: str
    hours_per_month: float
    prices: Mapping[str, Price]
    free: Mapping[str, str]

    def price(self, price_id: str, region: str = "*") -> Price:
        if price_id not in self.prices:
            raise CostError(f"stacks/prices.yaml has no price {price_id!r}")
        price = self.prices[price_id]
        if region != "*" and not price.applies_in(region):
            raise CostError(
                f"stacks/prices.yaml: {price_id} has no price for region {region!r}"
                f" (it lists {', '.join(price.regions)}); add that region's price and its source"
            )
        return price

    def free_reason(self, resource_type: str) -> str | None:
        return next((why for pattern, why in self.free.items() if fnmatch(resource_type, pattern)), None)

    @property
    def seconds_per_month(self) -> float:
        return self.hours_per_month * 3600


def load_prices(path: Path = PRICES, schema_path: Path = SCHEMA) -> PriceBook:
    """The price file, checked against its JSON Schema."""
    document = yaml.safe_load(path.read_text())
    schema = json.loads(schema_path.read_text())
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(document), key=str)
    if errors:
        problems = "; ".join(f"{'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}" for e in errors)
        raise CostError(f"{path.name} does not match {schema_path.name}: {problems}")
    prices = {
        price_id: Price(
            id=price_id,
            description=entry["description"],
            unit=entry["unit"],
            usd=entry["usd"],
            regions=tuple(entry["regions"]),
            source=entry["source"],
            checked=entry["checked"],
            basis=entry["basis"],
            included=float(entry.get("included", 0)),
            free_amount=float((entry.get("free") or {}).get("amount", 0)),
            free_scope=(entry.get("free") or {}).get("scope"),
        )
        for price_id, entry in document["prices"].items()
    }
    return PriceBook(
        version=document["version"],
        checked=document["checked"],
        hours_per_month=float(document["hoursPerMonth"]),
        prices=prices,
        free=document["free"],
    )


@dataclass(frozen=True)
class Charge:
    """A quantity of one price; `billable` is what is left after what the price includes."""

    price: str
    quantity: float
    billable: float
    unit_usd: float | None

    @property
    def usd(self) -> float | None:
        return None if self.unit_usd is None else self.billable * self.unit_usd


@dataclass(frozen=True)
class Line:
    """One line of the estimate. `key` names it the same way in every plan, for diffs."""

    key: str
    service: str
    item: str
    detail: str
    charges: tuple[Charge, ...]
    notes: tuple[str, ...] = ()

    @property
    def usd(self) -> float | None:
        amounts = [c.usd for c in self.charges]
        return None if any(a is None for a in amounts) else sum(a for a in amounts if a is not None)


@dataclass(frozen=True)
class Estimate:
    """A stack's monthly estimate, line by line."""

    stack: str
    lines: tuple[Line, ...]
    free_tiers: bool
    prices_checked: str
    prices_version: int
    usage: UsageSettings
    notes: tuple[str, ...] = field(default=())
    # The same stack priced for an idle month (IDLE_USAGE): what it costs with no work at all.
    idle: tuple[Line, ...] = field(default=())

    @property
    def total(self) -> float:
        return sum(line.usd or 0.0 for line in self.lines)

    @property
    def idle_total(self) -> float:
        return sum(line.usd or 0.0 for line in self.idle)

    @property
    def unpriced(self) -> tuple[Line, ...]:
        return tuple(line for line in self.lines if line.usd is None)


class Context:
    """What an estimator may read: the whole plan, the usage and the prices."""

    def __init__(self, plan: Mapping[str, Any], usage: UsageSettings, book: PriceBook) -> None:
        self.resources: list[Mapping[str, Any]] = list(plan.get("resources", []))
        self.usage = usage
        self.book = book
        self.month = book.seconds_per_month

    def of_type(self, token: str) -> list[Mapping[str, Any]]:
        return [r for r in self.resources if r["type"] == token]

    def charge(self, price_id: str, quantity: float, region: str = "*") -> Charge:
        price = self.book.price(price_id, region)
        billable = quantity if quantity < 0 else max(0.0, quantity - price.included)
        return Charge(price_id, quantity, billable, price.usd)


# --- Reading the rendered inputs -------------------------------------------------------------


def cpu_of(value: Any) -> float:
    text = str(value)
    return int(text[:-1]) / 1000 if text.endswith("m") else float(text)


def gib_of(value: Any) -> float:
    match = re.fullmatch(r"([0-9]+)(Mi|Gi|M|G)", str(value))
    if not match:
        raise CostError(f"cannot read memory size {value!r}")
    amount, unit = int(match.group(1)), match.group(2)
    return {"Mi": amount / 1024, "Gi": float(amount), "M": amount * 1e6 / 2**30, "G": amount * 1e9 / 2**30}[
        unit
    ]


def shape(template: Mapping[str, Any]) -> tuple[float, float]:
    """vCPU and GiB of one instance: the sum of its containers' limits (Cloud Run's defaults: 1, 512Mi)."""
    cpu = memory = 0.0
    for container in template.get("containers", []):
        limits = (container.get("resources") or {}).get("limits") or {}
        cpu += cpu_of(limits.get("cpu", "1"))
        memory += gib_of(limits.get("memory", "512Mi"))
    return cpu, memory


def secret_refs(template: Mapping[str, Any]) -> int:
    return sum(
        1
        for container in template.get("containers", [])
        for env in container.get("envs", [])
        if (env.get("valueSource") or {}).get("secretKeyRef")
    )


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


# --- Estimators, one per priced resource type --------------------------------------------------

Estimator = Callable[[list[Mapping[str, Any]], Context], list[Line]]


FULL_REQUESTS_NOTE = "Each request's time is counted in full, as if none shared an instance: an upper bound."
SERVICE = "gcp:cloudrunv2/service:Service"
WORKER_POOL = "gcp:cloudrunv2/workerPool:WorkerPool"
SCHEDULER_JOB = "gcp:cloudscheduler/job:Job"


def request_based(template: Mapping[str, Any]) -> bool:
    """Whether the service bills only while serving. `cpuIdle` is true by default, "however, if
    ResourceRequirements is set, the caller must explicitly set this field to true"
    (https://cloud.google.com/ruby/docs/reference/google-cloud-run-v2/latest/Google-Cloud-Run-V2-ResourceRequirements).
    """
    return all(
        bool(c["resources"].get("cpuIdle", False)) if c.get("resources") else True
        for c in template.get("containers", [])
    )


def plain_env(template: Mapping[str, Any]) -> dict[str, str]:
    """The containers' environment variables set to a value (not from a secret)."""
    return {
        str(env["name"]): str(env["value"])
        for container in template.get("containers", [])
        for env in container.get("envs", [])
        if env.get("value") is not None
    }


def is_scaler(inputs: Mapping[str, Any]) -> bool:
    """Whether a Cloud Run service is a worker pool's scaler (components/scaler.py): it names its pool."""
    return "SCALER_POOL" in plain_env(inputs["template"])


def services(resources: list[Mapping[str, Any]], ctx: Context) -> list[Line]:
    """The API from the declared request profile; a pool's scaler from its schedule and wakes."""
    api = [r for r in resources if not is_scaler(r["inputs"])]
    return api_services(api, ctx) + [
        line for r in resources if is_scaler(r["inputs"]) for line in scaler(r, ctx)
    ]


def api_services(resources: list[Mapping[str, Any]], ctx: Context) -> list[Line]:
    """Minimum instances, request time and requests, from the declared request profile."""
    lines: list[Line] = []
    u = ctx.usage
    for r in resources:
        inputs = r["inputs"]
        warm = warm_instances(inputs)
        serving = u.requests_per_month * u.mean_request_ms / 1000
        if request_based(inputs["template"]):
            profile = f"{u.requests_per_month:,} requests × {u.mean_request_ms} ms"
            lines += _request_billed(inputs, "API", warm, serving, u.requests_per_month, profile, ctx)
        else:
            lines.append(_instance_billed(inputs, "API", warm, serving, ctx))
    return lines


def warm_instances(inputs: Mapping[str, Any]) -> int:
    return int((inputs["template"].get("scaling") or {}).get("minInstanceCount", 0))


def _request_billed(
    inputs: Mapping[str, Any],
    role: str,
    warm: int,
    serving: float,
    requests: float,
    profile: str,
    ctx: Context,
    notes: tuple[str, ...] = (FULL_REQUESTS_NOTE,),
) -> list[Line]:
    """Minimum instances at the idle rate while not serving; serving time and requests at the active rates."""
    name, region = inputs["name"], inputs["location"]
    cpu, memory = shape(inputs["template"])
    size = f"{cpu:g} vCPU, {memory:g} GiB"
    idle = max(0.0, warm * ctx.month - serving)
    return [
        Line(
            f"run/{name}/min-instances",
            "Cloud Run",
            f"{role} {name}: {warm} minimum instance{'s' if warm != 1 else ''} kept warm",
            f"{idle / 3600:,.0f} idle instance-hours of {size}",
            (
                ctx.charge("run.idle.cpu", cpu * idle, region),
                ctx.charge("run.idle.memory", memory * idle, region),
            ),
        ),
        Line(
            f"run/{name}/request-time",
            "Cloud Run",
            f"{role} {name}: time serving requests",
            f"{profile} of {size}",
            (
                ctx.charge("run.request.cpu", cpu * serving, region),
                ctx.charge("run.request.memory", memory * serving, region),
            ),
            notes,
        ),
        Line(
            f"run/{name}/requests",
            "Cloud Run",
            f"{role} {name}: requests",
            f"{requests:,.0f} requests",
            (ctx.charge("run.request.count", requests / 1e6, region),),
        ),
    ]


def _instance_billed(inputs: Mapping[str, Any], role: str, warm: int, serving: float, ctx: Context) -> Line:
    """Whole instance lifetimes: the minimum instances all month, or the serving time if more."""
    name, region = inputs["name"], inputs["location"]
    cpu, memory = shape(inputs["template"])
    seconds = max(warm * ctx.month, serving)
    return Line(
        f"run/{name}/instances",
        "Cloud Run",
        f"{role} {name}: instances (instance-based billing)",
        f"{seconds / 3600:,.0f} instance-hours of {cpu:g} vCPU, {memory:g} GiB",
        (
            ctx.charge("run.instance.cpu", cpu * seconds, region),
            ctx.charge("run.instance.memory", memory * seconds, region),
        ),
    )


# --- The worker pool and its scaler ----------------------------------------------------------


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


def wakes(ctx: Context) -> float:
    """Wake requests a month: the API sends one after accepting a job, at most one per
    WORKER_WAKE_SECONDS across its instances (app/core/wake.py), so at most one a job."""
    for r in ctx.of_type(SERVICE):
        env = plain_env(r["inputs"]["template"])
        if env.get("WORKER_WAKE_URL"):
            interval = float(
                env.get("WORKER_WAKE_SECONDS", AppContract.model_fields["worker_wake_seconds"].default)
            )
            return float(min(ctx.usage.jobs_per_month, ctx.month / interval if interval > 0 else math.inf))
    return 0.0


def scaler_starts(ctx: Context) -> float:
    """The scaler's instance starts a month: one a release and SCALER_STARTS_PER_DAY."""
    return ctx.usage.releases_per_month + SCALER_STARTS_PER_DAY * ctx.book.hours_per_month / 24


@dataclass(frozen=True)
class OnDemand:
    """How a scaler sizes its pool, read from the scaler's environment in the plan (app/scaler/)."""

    scaler: str
    floor: int
    ceiling: int
    idle_seconds: float
    concurrency: int
    # The mean wait from the moment the idle period is over to the scheduled reconcile that
    # sets the floor: half the schedule's interval.
    delay_seconds: float


def on_demand(pool: Mapping[str, Any], ctx: Context) -> OnDemand | None:
    """The scaler of this worker pool, if one in the plan names it (SCALER_POOL); None: a fixed pool."""
    name = pool["name"]
    for r in ctx.of_type(SERVICE):
        env = plain_env(r["inputs"]["template"])
        target = env.get("SCALER_POOL")
        if target is None or not (target == name or target.endswith(f"/workerPools/{name}")):
            continue
        service = r["inputs"]["name"]
        runs = reconciles(service, ctx)
        if not runs:
            raise CostError(
                f"the scaler {service} of worker pool {name} has no Cloud Scheduler job asking it to"
                " reconcile: the time its pool takes to go back to its floor cannot be priced"
            )
        try:
            return OnDemand(
                scaler=service,
                floor=int(env["SCALER_MIN_INSTANCES"]),
                ceiling=int(env["SCALER_MAX_INSTANCES"]),
                idle_seconds=float(env["SCALER_IDLE_SECONDS"]),
                concurrency=int(env["WORKER_CONCURRENCY"]),
                delay_seconds=ctx.month / runs / 2,
            )
        except (KeyError, ValueError) as exc:
            raise CostError(f"the scaler {service} does not declare its pool's bounds: {exc!r}") from exc
    return None


@dataclass(frozen=True)
class PoolTime:
    """A worker pool's instance-seconds in a month, by reason, and its instance starts."""

    scaling: OnDemand | None
    floor: float  # the floor's instances (a fixed pool's, all of them), all month
    busy: float = 0.0  # on demand: instances running jobs, above the floor
    tail: float = 0.0  # on demand: instances idle after a busy period until the floor is set
    starting: float = 0.0  # on demand: instances starting, billed before they run a job
    starts: float = 0.0  # instance starts: the floor's at each release, and one a busy period above it
    bursts: float = 0.0  # busy periods that take the pool above its floor

    @property
    def seconds(self) -> float:
        return self.floor + self.busy + self.tail + self.starting


def pool_time(pool: Mapping[str, Any], ctx: Context) -> PoolTime:
    """Fixed: every instance all month. On demand: the floor all month; above it, the jobs' time at
    `concurrency` jobs an instance, and for each busy period one instance's start and idle tail."""
    u = ctx.usage
    scaling = on_demand(pool, ctx)
    if scaling is None:
        count = pool_instances(pool)
        return PoolTime(None, count * ctx.month, starts=count * u.releases_per_month)
    # A pool whose floor is its ceiling never goes above it: no busy period starts an instance.
    bursts = float(u.job_bursts_per_month) if scaling.ceiling > scaling.floor else 0.0
    return PoolTime(
        scaling,
        floor=scaling.floor * ctx.month,
        busy=u.jobs_per_month * u.mean_job_seconds / scaling.concurrency,
        tail=bursts * (scaling.idle_seconds + scaling.delay_seconds),
        starting=bursts * u.worker_start_seconds,
        starts=scaling.floor * u.releases_per_month + bursts,
        bursts=bursts,
    )


def worker_pools(resources: list[Mapping[str, Any]], ctx: Context) -> list[Line]:
    """A worker pool bills its instances' lifetimes, not requests: a fixed pool's all month; an
    on-demand pool's floor all month, and above it what its jobs, busy periods and starts take."""
    lines = []
    for r in resources:
        inputs = r["inputs"]
        time = pool_time(inputs, ctx)
        if time.scaling is None:
            count = pool_instances(inputs)
            lines.append(
                _pool_line(
                    inputs,
                    "instances",
                    f"{count} instance{'s' if count != 1 else ''}, always on",
                    f"{count} × ({_size(inputs)}) × {ctx.book.hours_per_month:g} h",
                    time.floor,
                    ctx,
                )
            )
        else:
            lines += _on_demand_lines(inputs, time, time.scaling, ctx)
    return lines


def _size(inputs: Mapping[str, Any]) -> str:
    cpu, memory = shape(inputs["template"])
    return f"{cpu:g} vCPU, {memory:g} GiB"


def _pool_line(
    inputs: Mapping[str, Any], key: str, item: str, detail: str, seconds: float, ctx: Context, *notes: str
) -> Line:
    cpu, memory = shape(inputs["template"])
    return Line(
        f"run/{inputs['name']}/{key}",
        "Cloud Run",
        f"Worker pool {inputs['name']}: {item}",
        detail,
        (
            ctx.charge("run.workerpool.cpu", cpu * seconds, inputs["location"]),
            ctx.charge("run.workerpool.memory", memory * seconds, inputs["location"]),
        ),
        notes,
    )


def _on_demand_lines(inputs: Mapping[str, Any], time: PoolTime, s: OnDemand, ctx: Context) -> list[Line]:
    u, size = ctx.usage, _size(inputs)
    return [
        _pool_line(
            inputs,
            "floor",
            f"floor of {s.floor} instance{'s' if s.floor != 1 else ''} (on demand)",
            f"{s.floor} × ({size}) × {ctx.book.hours_per_month:g} h",
            time.floor,
            ctx,
        ),
        _pool_line(
            inputs,
            "busy",
            "instances running jobs",
            f"{u.jobs_per_month:,} jobs × {u.mean_job_seconds} s ÷ {s.concurrency} jobs an instance"
            f" of {size}, above the floor",
            time.busy,
            ctx,
            "A worker pool's busy time is counted above its floor, as if the floor ran none of the jobs:"
            " an upper bound where the floor has room for them. It takes each instance as running"
            " `concurrency` jobs at once; gaps between a busy period's jobs are not counted.",
        ),
        _pool_line(
            inputs,
            "idle-tail",
            "idle after each busy period",
            f"{time.bursts:,.0f} busy periods × ({s.idle_seconds:g} s idle + {s.delay_seconds:g} s"
            f" to the next reconcile) of {size}",
            time.tail,
            ctx,
            "One instance a busy period is counted above the floor: a busy period whose queue needs more"
            " keeps the others up through its idle tail too, and a release's split step keeps the"
            " instances that give each revision its share while jobs run; neither is counted.",
        ),
        _pool_line(
            inputs,
            "starts",
            "instance starts (cold starts)",
            f"{time.bursts:,.0f} starts × {u.worker_start_seconds} s of {size}",
            time.starting,
            ctx,
            _first_job_wait(s, u.worker_start_seconds),
        ),
    ]


def _first_job_wait(s: OnDemand, start_seconds: int) -> str:
    """What a pool at its floor costs in time rather than money: the first job's wait."""
    if s.floor == 0:
        return (
            "The first job of each busy period waits for an instance to start: about workerStartSeconds"
            f" ({start_seconds} s, an estimate) after the API's wake, or up to a minute more if the wake"
            ' is lost (BENCHMARKS.md, "The worker pool at zero").'
        )
    return (
        f"A floor of {s.floor} takes the first jobs of a busy period at once; only work beyond its"
        " capacity waits for an instance to start."
    )


def pool_instances(inputs: Mapping[str, Any]) -> int:
    return int((inputs.get("scaling") or {}).get("manualInstanceCount", 1))


def scaler(resource: Mapping[str, Any], ctx: Context) -> list[Line]:
    """A pool's scaler: its reconciles (on its schedule) and wakes, each billed rounded up to
    REQUEST_BILLING_MS, and its starts, at the request-based rates; its schedule is a scheduler line."""
    inputs, u = resource["inputs"], ctx.usage
    name = inputs["name"]
    scheduled, woken, starts = reconciles(name, ctx), wakes(ctx), scaler_starts(ctx)
    billed_ms = math.ceil(u.scaler_request_ms / REQUEST_BILLING_MS) * REQUEST_BILLING_MS
    serving = (scheduled + woken) * billed_ms / 1000 + starts * u.worker_start_seconds
    if not request_based(inputs["template"]):
        return [_instance_billed(inputs, "Scaler", warm_instances(inputs), serving, ctx)]
    profile = (
        f"({scheduled:,.0f} scheduled reconciles + {woken:,.0f} wakes) × {billed_ms} ms"
        f" + {starts:,.0f} starts × {u.worker_start_seconds} s"
    )
    notes = (
        "The scaler's wakes are counted one a job (the API sends at most one per WORKER_WAKE_SECONDS):"
        " an upper bound. Its starts are one a release and one a day, an estimate.",
    )
    return _request_billed(
        inputs, "Scaler", warm_instances(inputs), serving, scheduled + woken, profile, ctx, notes
    )


def scheduled_runs(job_name: str, ctx: Context) -> float:
    """Runs a month of the Cloud Scheduler jobs that start this Cloud Run job."""
    return sum(
        runs_per_month(s["inputs"]["schedule"])
        for s in ctx.of_type(SCHEDULER_JOB)
        if _target(s).endswith(f"/jobs/{job_name}:run")
    )


def runs_per_release(job_name: str, ctx: Context) -> bool:
    """Whether a JobRun (components/jobrun.py) runs the job on every new image."""
    return any(
        str(r["inputs"].get("job", "")).endswith(f"/jobs/{job_name}") for r in ctx.of_type(JobRun.TYPE)
    )


def cloud_run_jobs(resources: list[Mapping[str, Any]], ctx: Context) -> list[Line]:
    """Runs a month × tasks × the declared run time: on every release, on a schedule, or both."""
    lines = []
    u = ctx.usage
    for r in resources:
        inputs, name = r["inputs"], r["inputs"]["name"]
        cpu, memory = shape(inputs["template"]["template"])
        tasks = int(inputs["template"].get("taskCount", 1))
        runs: list[tuple[float, int, str]] = []
        if runs_per_release(name, ctx):  # a JobRun runs it whenever the image changes: each release
            runs.append((u.releases_per_month, u.migration_seconds, "release"))
        if scheduled := scheduled_runs(name, ctx):
            runs.append((scheduled, u.retention_seconds, "scheduled run"))
        seconds = sum(count * length for count, length, _ in runs) * tasks
        detail = " + ".join(f"{count:.4g} {kind}s × {length} s" for count, length, kind in runs)
        lines.append(
            Line(
                f"run/{name}/runs",
                "Cloud Run",
                f"Job {name}",
                (detail or "runs only when started by hand") + f" of {cpu:g} vCPU, {memory:g} GiB",
                (
                    ctx.charge("run.job.cpu", cpu * seconds, inputs["location"]),
                    ctx.charge("run.job.memory", memory * seconds, inputs["location"]),
                ),
            )
        )
    return lines


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


def secret_versions(resources: list[Mapping[str, Any]], ctx: Context) -> list[Line]:
    """Active versions, and the accesses: each instance or task start reads each secret it mounts."""
    u = ctx.usage
    starts: list[tuple[int, float]] = []
    for r in ctx.of_type(SERVICE):
        count = scaler_starts(ctx) if is_scaler(r["inputs"]) else u.api_instance_starts_per_month
        starts.append((secret_refs(r["inputs"]["template"]), count))
    for r in ctx.of_type(WORKER_POOL):
        starts.append((secret_refs(r["inputs"]["template"]), pool_time(r["inputs"], ctx).starts))
    for r in ctx.of_type("gcp:cloudrunv2/job:Job"):
        job = r["inputs"]
        runs = scheduled_runs(job["name"], ctx) + (
            u.releases_per_month if runs_per_release(job["name"], ctx) else 0
        )
        starts.append(
            (secret_refs(job["template"]["template"]), runs * int(job["template"].get("taskCount", 1)))
        )
    accesses = sum(refs * count for refs, count in starts)
    return [
        Line(
            "secrets/versions",
            "Secret Manager",
            f"{len(resources)} active secret versions",
            "automatic replication, billed as one location",
            (ctx.charge("secrets.version", len(resources)),),
        ),
        Line(
            "secrets/accesses",
            "Secret Manager",
            "Secret accesses",
            f"{accesses:,.0f} a month: each instance or task start reads the secrets it mounts",
            (ctx.charge("secrets.access", accesses / 10_000),),
        ),
    ]


def registries(resources: list[Mapping[str, Any]], ctx: Context) -> list[Line]:
    """One image plus what each kept release adds, as many releases as the cleanup policy keeps."""
    u = ctx.usage
    lines = []
    for r in resources:
        inputs = r["inputs"]
        kept = [
            int(p["mostRecentVersions"]["keepCount"])
            for p in inputs.get("cleanupPolicies", [])
            if p.get("action") == "KEEP" and (p.get("mostRecentVersions") or {}).get("keepCount")
        ]
        releases = max(kept) if kept else u.releases_per_month
        gb = (u.image_mb + releases * u.image_mb_per_release) / 1000
        lines.append(
            Line(
                f"registry/{inputs['repositoryId']}",
                "Artifact Registry",
                f"Repository {inputs['repositoryId']}: image storage",
                f"{gb:,.2f} GB: a {u.image_mb} MB image"
                f" + {releases} kept releases × {u.image_mb_per_release} MB",
                (ctx.charge("registry.storage", gb, inputs.get("location", "*")),),
            )
        )
    return lines


def supabase_projects(resources: list[Mapping[str, Any]], ctx: Context) -> list[Line]:
    """The plan's fee, the compute size's hours less the plan's compute credits, and extra disk."""
    lines = []
    for r in resources:
        inputs, name = r["inputs"], r["inputs"]["name"]
        plan = ctx.usage.supabase_plan
        declared = inputs.get("instance_size") or inputs.get("instanceSize")
        # Supabase's API also spells sizes with a "ci_" prefix (ci_micro); the price file does not.
        size = str(declared or DEFAULT_COMPUTE.get(plan, "micro")).removeprefix("ci_")
        compute = ctx.charge(f"supabase.compute.{size}", ctx.book.hours_per_month)
        charges = [ctx.charge(f"supabase.plan.{plan}", 1), compute]
        credit = ctx.book.price("supabase.compute.credit")
        if plan != "free" and credit.usd and compute.usd:
            charges.append(ctx.charge("supabase.compute.credit", -min(1.0, compute.usd / credit.usd)))
        charges.append(ctx.charge("supabase.disk", ctx.usage.database_gb))
        lines.append(
            Line(
                f"supabase/{name}",
                "Supabase",
                f"Project {name}: {plan} plan, {size} compute",
                f"plan fee + {ctx.book.hours_per_month:g} h of {size}"
                + (" − compute credits" if plan != "free" else "")
                + f"; {ctx.usage.database_gb} GB of data",
                tuple(charges),
                ("The plan's fee and credits are per organization: one organization per stack is assumed.",),
            )
        )
    return lines


def upstash_databases(resources: list[Mapping[str, Any]], ctx: Context) -> list[Line]:
    """The worker's idle polling (BENCHMARKS.md), the commands jobs cost, readiness pings, storage."""
    u = ctx.usage
    # Each worker instance polls while it runs: all month for a fixed pool, its hours for an on-demand one.
    hours = sum(pool_time(r["inputs"], ctx).seconds for r in ctx.of_type(WORKER_POOL)) / 3600
    idle = hours * WORKER_IDLE_COMMANDS_PER_HOUR
    wake_keys = u.jobs_per_month * WAKE_COMMANDS_PER_JOB if wakes(ctx) else 0
    commands = idle + u.jobs_per_month * REDIS_COMMANDS_PER_JOB + wake_keys + u.api_instance_starts_per_month
    woken = f", {wake_keys:,} wake keys" if wake_keys else ""
    lines = []
    for r in resources:
        inputs, name = r["inputs"], r["inputs"]["databaseName"]
        line = Line(
            f"upstash/{name}",
            "Upstash",
            f"Redis {name}: pay as you go",
            f"{commands:,.0f} commands ({idle:,.0f} idle worker polls in {hours:,.0f} instance-hours,"
            f" {u.jobs_per_month:,} jobs × {REDIS_COMMANDS_PER_JOB}{woken},"
            f" {u.api_instance_starts_per_month:,} readiness pings); {u.redis_mb} MB stored",
            (
                ctx.charge("upstash.command", commands / 100_000),
                ctx.charge("upstash.storage", u.redis_mb / 1000),
            ),
        )
        budget = inputs.get("budget")
        if budget is not None and (line.usd or 0) > float(budget):
            line = Line(
                line.key,
                line.service,
                line.item,
                line.detail,
                line.charges,
                (f"Above the database's ${budget} monthly budget: Upstash throttles it there.",),
            )
        lines.append(line)
    return lines


def alert_policies(resources: list[Mapping[str, Any]], ctx: Context) -> list[Line]:
    conditions = sum(len(r["inputs"].get("conditions", [])) for r in resources)
    return [
        Line(
            "monitoring/alerts",
            "Cloud Monitoring",
            f"{len(resources)} alerting policies",
            f"{conditions} conditions",
            (ctx.charge("monitoring.alert.condition", conditions),),
        )
    ]


def uptime_checks(resources: list[Mapping[str, Any]], ctx: Context) -> list[Line]:
    runs = sum(ctx.month / float(str(r["inputs"].get("period", "60s")).rstrip("s")) for r in resources)
    return [
        Line(
            "monitoring/uptime",
            "Cloud Monitoring",
            f"{len(resources)} uptime check{'s' if len(resources) != 1 else ''}",
            f"{runs:,.0f} executions a month from each checker region",
            (ctx.charge("monitoring.uptime.check", runs / 1000),),
        )
    ]


def log_metrics(resources: list[Mapping[str, Any]], ctx: Context) -> list[Line]:
    return [
        Line(
            "logging/metrics",
            "Cloud Logging",
            f"{len(resources)} log-based metrics",
            "billed by the volume of metric data they write",
            (ctx.charge("logging.metric", len(resources)),),
        )
    ]


ESTIMATORS: dict[str, Estimator] = {
    SERVICE: services,
    WORKER_POOL: worker_pools,
    "gcp:cloudrunv2/job:Job": cloud_run_jobs,
    SCHEDULER_JOB: scheduler_jobs,
    "gcp:secretmanager/secretVersion:SecretVersion": secret_versions,
    "gcp:artifactregistry/repository:Repository": registries,
    SupabaseProject.TYPE: supabase_projects,
    "upstash:index/redisDatabase:RedisDatabase": upstash_databases,
    "gcp:monitoring/alertPolicy:AlertPolicy": alert_policies,
    "gcp:monitoring/uptimeCheckConfig:UptimeCheckConfig": uptime_checks,
    "gcp:logging/metric:Metric": log_metrics,
}


# --- The estimate ----------------------------------------------------------------------------


def check_coverage(types: Iterable[str], book: PriceBook) -> None:
    """Every resource type is priced here or listed as free in the price file, or this raises."""
    missing = sorted({t for t in types if t not in ESTIMATORS and book.free_reason(t) is None})
    if missing:
        raise CostError(
            "no price for resource type(s) "
            + ", ".join(missing)
            + ": add an estimator to stacks/cost.py, or list the type under `free:` in stacks/prices.yaml"
        )


def free_tier_lines(lines: Sequence[Line], book: PriceBook) -> list[Line]:
    """The billing-account free tiers, applied to this stack's lines as if it were alone on its account."""
    used: dict[str, float] = {}
    for line in lines:
        for charge in line.charges:
            used[charge.price] = used.get(charge.price, 0.0) + charge.billable
    out = []
    for price_id, quantity in sorted(used.items()):
        price = book.prices[price_id]
        if price.free_amount and price.usd and quantity > 0:
            covered = min(quantity, price.free_amount)
            out.append(
                Line(
                    f"free/{price_id}",
                    "Free tiers",
                    f"{price.description} ({price.free_scope})",
                    f"{price.free_amount:,g} × {price.unit} a month",
                    (Charge(price_id, -covered, -covered, price.usd),),
                )
            )
    return out


def priced_lines(
    plan: Mapping[str, Any], usage: UsageSettings, book: PriceBook, free_tiers: bool
) -> list[Line]:
    """Every estimator's lines for this plan at this usage (the plan's types checked first)."""
    ctx = Context(plan, usage, book)
    lines: list[Line] = []
    for token, estimator in ESTIMATORS.items():
        if of_type := ctx.of_type(token):
            lines += estimator(of_type, ctx)
    if free_tiers:
        lines += free_tier_lines(lines, book)
    return lines


def idle_usage(usage: UsageSettings) -> UsageSettings:
    """The usage of an idle month: nothing asked of the stack, everything else as declared."""
    return usage.model_copy(update=dict.fromkeys(IDLE_USAGE, 0))


def estimate(
    plan: Mapping[str, Any], usage: UsageSettings, book: PriceBook, *, free_tiers: bool = False
) -> Estimate:
    """The monthly estimate of one rendered plan (the document `stacks/plan.py render` writes), at
    the declared usage and in an idle month."""
    check_coverage((r["type"] for r in plan.get("resources", [])), book)
    state = "applied to this stack alone" if free_tiers else "not counted (--free-tiers applies them)"
    return Estimate(
        stack=str(plan.get("stack", "")),
        lines=tuple(priced_lines(plan, usage, book, free_tiers)),
        free_tiers=free_tiers,
        prices_checked=book.checked,
        prices_version=book.version,
        usage=usage,
        notes=(FREE_TIERS_NOTE.format(state=state), IDLE_NOTE),
        idle=tuple(priced_lines(plan, idle_usage(usage), book, free_tiers)),
    )


def stack_usage(stack: str, root: Path = ROOT) -> UsageSettings:
    """`liftoff:usage` of Pulumi.<stack>.yaml under `root`, validated (defaults where it is absent)."""
    return usage_settings(stack_config(stack, root).get(f"{NAMESPACE}:usage"))


# --- Output ----------------------------------------------------------------------------------


def money(usd: float | None, signed: bool = False) -> str:
    if usd is None:
        return "n/a"
    if signed and round(usd, 2) == 0:
        return "±0.00"
    return f"{usd:+,.2f}" if signed else f"{usd:,.2f}"


def to_json(e: Estimate) -> dict[str, Any]:
    return {
        "stack": e.stack,
        "currency": "USD",
        "pricesChecked": e.prices_checked,
        "pricesVersion": e.prices_version,
        "freeTiers": e.free_tiers,
        "total": round(e.total, 2),
        "idleTotal": round(e.idle_total, 2),
        "lines": [
            {
                "key": line.key,
                "service": line.service,
                "item": line.item,
                "detail": line.detail,
                "usd": None if line.usd is None else round(line.usd, 2),
                "charges": [
                    {"price": c.price, "quantity": c.quantity, "billable": c.billable, "unitUsd": c.unit_usd}
                    for c in line.charges
                ],
                "notes": list(line.notes),
            }
            for line in e.lines
        ],
        "unpriced": [line.key for line in e.unpriced],
        "usage": {key: getattr(e.usage, name) for key, (name, _, _) in USAGE_KEYS.items()},
        "idleUsage": {key: 0 for key, (name, _, _) in USAGE_KEYS.items() if name in IDLE_USAGE},
        "idleLines": [
            {"key": line.key, "usd": None if line.usd is None else round(line.usd, 2)} for line in e.idle
        ],
        "notes": list(e.notes),
    }


def _footer(e: Estimate) -> list[str]:
    out = list(e.notes)
    if e.unpriced:
        out.append(
            "Not in the total (no confirmed price in stacks/prices.yaml): "
            + ", ".join(line.item for line in e.unpriced)
            + "."
        )
    out += sorted({note for line in e.lines for note in line.notes})
    return out


def table(e: Estimate, width: int = 48) -> str:
    """For a terminal: one row a line, the quantity wrapped to `width` columns."""
    header = ("Service", "Line", "Quantity", "USD/month")
    rows = [(line.service, line.item, line.detail, money(line.usd)) for line in e.lines]
    totals = [("Total", "", "", money(e.total)), ("Idle month", IDLE_ROW, "", money(e.idle_total))]
    widths = [max(len(row[i]) for row in [header, *rows, *totals]) for i in (0, 1)]
    widths += [width, max(len(row[3]) for row in [header, *rows, *totals])]

    def fmt(row: Sequence[str]) -> list[str]:
        wrapped = textwrap.wrap(row[2], width) or [""]
        first = [
            row[0].ljust(widths[0]),
            row[1].ljust(widths[1]),
            wrapped[0].ljust(width),
            row[3].rjust(widths[3]),
        ]
        rest = [" " * (widths[0] + widths[1] + 4) + more for more in wrapped[1:]]
        return ["  ".join(first).rstrip(), *rest]

    rule = "-" * (sum(widths) + 6)
    out = [f"Monthly estimate for {e.stack} (USD, prices checked {e.prices_checked})", *fmt(header), rule]
    for row in rows:
        out += fmt(row)
    out += [rule, *(text for row in totals for text in fmt(row)), ""]
    return "\n".join(out + [f"- {note}" for note in _footer(e)]) + "\n"


def markdown(e: Estimate) -> str:
    out = [
        f"### {e.stack}: about ${money(e.total)} a month (${money(e.idle_total)} idle)",
        "",
        "| Service | Line | Quantity | USD/month |",
        "| --- | --- | --- | ---: |",
        *(f"| {line.service} | {line.item} | {line.detail} | {money(line.usd)} |" for line in e.lines),
        f"| **Total** | | | **{money(e.total)}** |",
        f"| **Idle month** | {IDLE_ROW} | | **{money(e.idle_total)}** |",
        "",
        *(f"- {note}" for note in _footer(e)),
    ]
    return "\n".join(out) + "\n"


def diff_markdown(before: Estimate | None, after: Estimate) -> str:
    """Monthly cost before and after, the lines whose cost changed, and the usage assumptions that did."""
    if before is None:
        return f"Monthly cost: about ${money(after.total)} (the base did not render, so no comparison)."
    old = {line.key: line for line in before.lines}
    new = {line.key: line for line in after.lines}
    rows = []
    for key in [*old, *(k for k in new if k not in old)]:
        a, b = old.get(key), new.get(key)
        usd_a, usd_b = (a.usd if a else 0.0), (b.usd if b else 0.0)
        if money(usd_a) == money(usd_b):
            continue
        line = b or a
        if line is None:
            continue
        delta = None if usd_a is None or usd_b is None else usd_b - usd_a
        cells = (line.service, line.item, money(usd_a), money(usd_b), money(delta, signed=True))
        rows.append("| " + " | ".join(cells) + " |")
    usage = [
        f"`{key}` {getattr(before.usage, name):,} → {getattr(after.usage, name):,}"
        for key, (name, _, _) in USAGE_KEYS.items()
        if getattr(before.usage, name) != getattr(after.usage, name)
    ]
    if not rows:
        return f"Monthly cost unchanged: about ${money(after.total)}."
    out = [
        f"Monthly cost: ${money(before.total)} → ${money(after.total)}"
        f" (**{money(after.total - before.total, signed=True)}** USD)",
        "",
        "| Service | Line | Before | After | Change |",
        "| --- | --- | ---: | ---: | ---: |",
        *rows,
    ]
    if money(before.idle_total) != money(after.idle_total):
        out += ["", f"Idle month: ${money(before.idle_total)} → ${money(after.idle_total)}."]
    if usage:
        out += ["", f"Usage assumptions changed (`{NAMESPACE}:usage`): " + "; ".join(usage) + "."]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="stacks/cost.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--stack", required=True, choices=("staging", "prod"))
    parser.add_argument("--plan", type=Path, help="a plan file from `make plan` (default: render it now)")
    parser.add_argument("--format", choices=("table", "markdown", "json"), default="table")
    parser.add_argument(
        "--json", action="store_const", const="json", dest="format", help="same as --format json"
    )
    parser.add_argument(
        "--free-tiers", action="store_true", help="apply the billing-account free tiers to this stack alone"
    )
    args = parser.parse_args(argv)
    try:
        if args.plan:
            plan = json.loads(args.plan.read_text())
        else:
            from stacks.plan import render_plan

            plan = render_plan(args.stack, ROOT)
        result = estimate(plan, stack_usage(args.stack), load_prices(), free_tiers=args.free_tiers)
    except (CostError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    output = {"table": table, "markdown": markdown}.get(args.format)
    sys.stdout.write(
        output(result) if output else json.dumps(to_json(result), indent=2, ensure_ascii=False) + "\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
