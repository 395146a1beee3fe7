"""Secret Manager: active secret versions, and the accesses each instance or task start makes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tools.cost.cloud_run import SERVICE, is_scaler, scaler_starts
from tools.cost.jobs import runs_per_release
from tools.cost.model import Context, Line, secret_refs
from tools.cost.scheduling import scheduled_runs
from tools.cost.worker_pool import WORKER_POOL, pool_time


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
