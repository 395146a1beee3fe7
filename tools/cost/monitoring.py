"""Cloud Monitoring's alerting policies and uptime checks, and Cloud Logging's log-based metrics."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tools.cost.model import Context, Line


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
