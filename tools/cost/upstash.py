"""Upstash Redis: the commands idle workers, jobs, wakes and readiness pings send, and storage."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tools.cost.cloud_run import wakes
from tools.cost.model import Context, Line
from tools.cost.worker_pool import WORKER_POOL, pool_time

# Measured in BENCHMARKS.md ("Worker", 2026-11-23): an idle worker's Redis commands an hour, and
# the commands one job costs (submitter and worker together). tests/tools/test_cost.py keeps
# these in step with the table.
WORKER_IDLE_COMMANDS_PER_HOUR = 15
REDIS_COMMANDS_PER_JOB = 1.05
# The API's wake (app/core/wake.py) sets a Redis key (SET NX) for every job it accepts, to send at
# most one wake per WORKER_WAKE_SECONDS: one more command a job where an on-demand pool is woken.
WAKE_COMMANDS_PER_JOB = 1


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
