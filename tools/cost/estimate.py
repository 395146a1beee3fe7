"""The estimate: every priced resource type's estimator over a plan, at the declared usage and idle."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from components.supabase_api import SupabaseProject
from stacks.settings import NAMESPACE, UsageSettings, usage_settings
from tools.cost.artifact_registry import registries
from tools.cost.cloud_run import SERVICE, services
from tools.cost.jobs import cloud_run_jobs
from tools.cost.model import Charge, Context, Estimate, Line
from tools.cost.monitoring import alert_policies, log_metrics, uptime_checks
from tools.cost.prices import ROOT, CostError, PriceBook
from tools.cost.scheduling import SCHEDULER_JOB, scheduler_jobs
from tools.cost.secret_manager import secret_versions
from tools.cost.supabase import supabase_projects
from tools.cost.upstash import upstash_databases
from tools.cost.worker_pool import WORKER_POOL, worker_pools
from tools.render import stack_config

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
IDLE_NOTE = (
    "Total: a month at the usage the stack file declares (liftoff:usage). Idle month: the same stack"
    " with no requests, jobs, busy periods or releases."
)

# --- Estimators, one per priced resource type --------------------------------------------------

Estimator = Callable[[list[Mapping[str, Any]], Context], list[Line]]

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
            + ": add an estimator to tools/cost/, or list the type under `free:` in tools/prices.yaml"
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
    """The monthly estimate of one rendered plan (the document `tools/plan.py render` writes), at
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
