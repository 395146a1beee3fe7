"""Cloud Run services: the API from its request profile, a pool's scaler from its schedule and wakes."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from app.settings import Settings as AppContract
from stacks.settings import HOURS_PER_MONTH
from tools.cost.model import Context, Line, shape
from tools.cost.scheduling import reconciles

SERVICE = "gcp:cloudrunv2/service:Service"
FULL_REQUESTS_NOTE = "Each request's time is counted in full, as if none shared an instance: an upper bound."
# "Cloud Run charges you only for the resources you use, rounded up to the nearest 100 millisecond"
# (https://cloud.google.com/run/pricing): a scaler request is billed in whole tenths of a second.
REQUEST_BILLING_MS = 100
# The scaler is asked to reconcile each minute, and Cloud Run keeps an idle instance for up to
# 15 minutes (https://cloud.google.com/run/docs/about-instance-autoscaling), so its one instance
# stays up: it is taken to start once a day (Cloud Run may stop an instance at any time; an
# estimate) and once a release, which deploys a new revision of it.
SCALER_STARTS_PER_DAY = 1


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


# --- The worker pool's scaler -----------------------------------------------------------------


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
    return ctx.usage.releases_per_month + SCALER_STARTS_PER_DAY * HOURS_PER_MONTH / 24


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
