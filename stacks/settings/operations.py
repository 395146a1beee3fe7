"""`liftoff:retention` and `liftoff:alerts`: the scheduled cleanup, and who is paged at which thresholds."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field

from components.rules import Cron, Email, LatencyMs, QueueAgeSeconds, Ratio
from stacks.settings.base import Section, app_bounds, app_default


class RetentionSettings(Section):
    """`liftoff:retention`: the scheduled cleanup of old generation logs."""

    days: Annotated[int, AfterValidator(app_bounds("retention_days"))] = Field(
        app_default("retention_days"), description="Age in days after which generation logs are deleted."
    )
    schedule: Cron = Field("17 3 * * *", description="When the cleanup runs (Cloud Scheduler, UTC).")


class AlertSettings(Section):
    """`liftoff:alerts`: who is paged, and at which thresholds."""

    email: Email = Field(description="Where alerts are sent.")
    error_ratio: Ratio = Field(0.05, description="Share of API requests answered 5xx that pages.")
    p95_latency_ms: LatencyMs = Field(2000, description="API p95 latency in milliseconds that pages.")
    job_failure_ratio: Ratio = Field(0.10, description="Share of failed jobs that pages.")
    oldest_queued_seconds: QueueAgeSeconds = Field(
        300, description="Age in seconds of the oldest queued job that pages."
    )
