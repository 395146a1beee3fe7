"""What a stack costs a month, estimated offline from its rendered plan.

    python stacks/cost.py --stack prod [--format table|markdown|json] [--free-tiers] [--plan FILE]

The plan is the one `stacks/plan.py render` writes (rendered here unless --plan names one); the
prices come from stacks/prices.yaml, each with its source and the day it was read; the usage
(requests, jobs, releases a month) from the stack file's `liftoff:usage`. No credentials.

Free tiers belong to a billing account, not to a stack: they are left out unless --free-tiers
asks to apply them to this stack as if it were alone on its account.
"""

from __future__ import annotations

import argparse
import json
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
# A new Supabase project's compute size when the plan names none (Free runs on Nano, paid plans
# start on Micro): https://supabase.com/docs/guides/platform/manage-your-usage/compute
DEFAULT_COMPUTE = {"free": "nano", "pro": "micro"}
FREE_TIERS_NOTE = "Free tiers are per billing account, shared by every stack and project on it: {state}."


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

    @property
    def total(self) -> float:
        return sum(line.usd or 0.0 for line in self.lines)

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


def request_based(template: Mapping[str, Any]) -> bool:
    """Whether the service bills only while serving. `cpuIdle` is true by default, "however, if
    ResourceRequirements is set, the caller must explicitly set this field to true"
    (https://cloud.google.com/ruby/docs/reference/google-cloud-run-v2/latest/Google-Cloud-Run-V2-ResourceRequirements).
    """
    return all(
        bool(c["resources"].get("cpuIdle", False)) if c.get("resources") else True
        for c in template.get("containers", [])
    )


def api_services(resources: list[Mapping[str, Any]], ctx: Context) -> list[Line]:
    """Minimum instances, request time and requests, from the declared request profile."""
    lines: list[Line] = []
    for r in resources:
        inputs = r["inputs"]
        warm = int((inputs["template"].get("scaling") or {}).get("minInstanceCount", 0))
        serving = ctx.usage.requests_per_month * ctx.usage.mean_request_ms / 1000
        if request_based(inputs["template"]):
            lines += _request_billed(inputs, warm, serving, ctx)
        else:
            lines.append(_instance_billed(inputs, warm, serving, ctx))
    return lines


def _request_billed(inputs: Mapping[str, Any], warm: int, serving: float, ctx: Context) -> list[Line]:
    """Minimum instances at the idle rate while not serving; serving time and requests at the active rates."""
    name, region, u = inputs["name"], inputs["location"], ctx.usage
    cpu, memory = shape(inputs["template"])
    size = f"{cpu:g} vCPU, {memory:g} GiB"
    idle = max(0.0, warm * ctx.month - serving)
    return [
        Line(
            f"run/{name}/min-instances",
            "Cloud Run",
            f"API {name}: {warm} minimum instance{'s' if warm != 1 else ''} kept warm",
            f"{idle / 3600:,.0f} idle instance-hours of {size}",
            (
                ctx.charge("run.idle.cpu", cpu * idle, region),
                ctx.charge("run.idle.memory", memory * idle, region),
            ),
        ),
        Line(
            f"run/{name}/request-time",
            "Cloud Run",
            f"API {name}: time serving requests",
            f"{u.requests_per_month:,} requests × {u.mean_request_ms} ms of {size}",
            (
                ctx.charge("run.request.cpu", cpu * serving, region),
                ctx.charge("run.request.memory", memory * serving, region),
            ),
            ("Each request's time is counted in full, as if none shared an instance: an upper bound.",),
        ),
        Line(
            f"run/{name}/requests",
            "Cloud Run",
            f"API {name}: requests",
            f"{u.requests_per_month:,} requests",
            (ctx.charge("run.request.count", u.requests_per_month / 1e6, region),),
        ),
    ]


def _instance_billed(inputs: Mapping[str, Any], warm: int, serving: float, ctx: Context) -> Line:
    """Whole instance lifetimes: the minimum instances all month, or the serving time if more."""
    name, region = inputs["name"], inputs["location"]
    cpu, memory = shape(inputs["template"])
    seconds = max(warm * ctx.month, serving)
    return Line(
        f"run/{name}/instances",
        "Cloud Run",
        f"API {name}: instances (instance-based billing)",
        f"{seconds / 3600:,.0f} instance-hours of {cpu:g} vCPU, {memory:g} GiB",
        (
            ctx.charge("run.instance.cpu", cpu * seconds, region),
            ctx.charge("run.instance.memory", memory * seconds, region),
        ),
    )


def worker_pools(resources: list[Mapping[str, Any]], ctx: Context) -> list[Line]:
    """Every instance, all month: a worker pool bills instances, not requests."""
    lines = []
    for r in resources:
        inputs, name = r["inputs"], r["inputs"]["name"]
        cpu, memory = shape(inputs["template"])
        count = pool_instances(inputs)
        seconds = count * ctx.month
        lines.append(
            Line(
                f"run/{name}/instances",
                "Cloud Run",
                f"Worker pool {name}: {count} instance{'s' if count != 1 else ''}, always on",
                f"{count} × ({cpu:g} vCPU, {memory:g} GiB) × {ctx.book.hours_per_month:g} h",
                (
                    ctx.charge("run.workerpool.cpu", cpu * seconds, inputs["location"]),
                    ctx.charge("run.workerpool.memory", memory * seconds, inputs["location"]),
                ),
            )
        )
    return lines


def pool_instances(inputs: Mapping[str, Any]) -> int:
    return int((inputs.get("scaling") or {}).get("manualInstanceCount", 1))


def scheduled_runs(job_name: str, ctx: Context) -> float:
    """Runs a month of the Cloud Scheduler jobs that start this Cloud Run job."""
    return sum(
        runs_per_month(s["inputs"]["schedule"])
        for s in ctx.of_type("gcp:cloudscheduler/job:Job")
        if str((s["inputs"].get("httpTarget") or {}).get("uri", "")).endswith(f"/jobs/{job_name}:run")
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


def scheduler_jobs(resources: list[Mapping[str, Any]], ctx: Context) -> list[Line]:
    return [
        Line(
            f"scheduler/{r['inputs']['name']}",
            "Cloud Scheduler",
            f"Job {r['inputs']['name']}",
            f"billed per job, not per run ({runs_per_month(r['inputs']['schedule']):.4g} runs a month)",
            (ctx.charge("scheduler.job", 1, r["inputs"].get("region", "*")),),
        )
        for r in resources
    ]


def secret_versions(resources: list[Mapping[str, Any]], ctx: Context) -> list[Line]:
    """Active versions, and the accesses: each instance or task start reads each secret it mounts."""
    u = ctx.usage
    starts: list[tuple[int, float]] = []
    for r in ctx.of_type("gcp:cloudrunv2/service:Service"):
        starts.append((secret_refs(r["inputs"]["template"]), u.api_instance_starts_per_month))
    for r in ctx.of_type("gcp:cloudrunv2/workerPool:WorkerPool"):
        starts.append(
            (secret_refs(r["inputs"]["template"]), pool_instances(r["inputs"]) * u.releases_per_month)
        )
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
    workers = sum(pool_instances(r["inputs"]) for r in ctx.of_type("gcp:cloudrunv2/workerPool:WorkerPool"))
    idle = workers * ctx.book.hours_per_month * WORKER_IDLE_COMMANDS_PER_HOUR
    commands = idle + u.jobs_per_month * REDIS_COMMANDS_PER_JOB + u.api_instance_starts_per_month
    lines = []
    for r in resources:
        inputs, name = r["inputs"], r["inputs"]["databaseName"]
        line = Line(
            f"upstash/{name}",
            "Upstash",
            f"Redis {name}: pay as you go",
            f"{commands:,.0f} commands ({idle:,.0f} idle worker polls, {u.jobs_per_month:,} jobs"
            f" × {REDIS_COMMANDS_PER_JOB}, {u.api_instance_starts_per_month:,} readiness pings);"
            f" {u.redis_mb} MB stored",
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
    "gcp:cloudrunv2/service:Service": api_services,
    "gcp:cloudrunv2/workerPool:WorkerPool": worker_pools,
    "gcp:cloudrunv2/job:Job": cloud_run_jobs,
    "gcp:cloudscheduler/job:Job": scheduler_jobs,
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


def estimate(
    plan: Mapping[str, Any], usage: UsageSettings, book: PriceBook, *, free_tiers: bool = False
) -> Estimate:
    """The monthly estimate of one rendered plan (the document `stacks/plan.py render` writes)."""
    resources = plan.get("resources", [])
    check_coverage((r["type"] for r in resources), book)
    ctx = Context(plan, usage, book)
    lines: list[Line] = []
    for token, estimator in ESTIMATORS.items():
        if of_type := ctx.of_type(token):
            lines += estimator(of_type, ctx)
    if free_tiers:
        lines += free_tier_lines(lines, book)
    state = "applied to this stack alone" if free_tiers else "not counted (--free-tiers applies them)"
    return Estimate(
        stack=str(plan.get("stack", "")),
        lines=tuple(lines),
        free_tiers=free_tiers,
        prices_checked=book.checked,
        prices_version=book.version,
        usage=usage,
        notes=(FREE_TIERS_NOTE.format(state=state),),
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
    widths = [max(len(row[i]) for row in [header, *rows]) for i in (0, 1)]
    widths += [width, max(len(row[3]) for row in [header, *rows, ("", "", "", money(e.total))])]

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
    out += [rule, *fmt(("Total", "", "", money(e.total))), ""]
    return "\n".join(out + [f"- {note}" for note in _footer(e)]) + "\n"


def markdown(e: Estimate) -> str:
    out = [
        f"### {e.stack}: about ${money(e.total)} a month",
        "",
        "| Service | Line | Quantity | USD/month |",
        "| --- | --- | --- | ---: |",
        *(f"| {line.service} | {line.item} | {line.detail} | {money(line.usd)} |" for line in e.lines),
        f"| **Total** | | | **{money(e.total)}** |",
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
