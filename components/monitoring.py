"""Monitoring: an uptime check on the API and alerts on errors, latency, job failures and queue age."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import pulumi
from pulumi_gcp import logging, monitoring

from components.rules import Email, LatencyMs, QueueAgeSeconds, Ratio, check

# The worker's log lines come from a Cloud Run worker pool. A log-based metric maps to every
# monitored resource type its entries come from, and in PromQL such a metric must name one with
# the `monitored_resource` label (https://cloud.google.com/monitoring/promql/promql-mapping, "The
# monitored_resource label"). The worker pool's type is the one `gcloud run worker-pools logs`
# filters on.
WORKER_RESOURCE = "cloud_run_worker_pool"
WORKER_SELECTOR = f'monitored_resource="{WORKER_RESOURCE}"'


@dataclass(frozen=True)
class MonitoringArgs:
    """What to watch, and the thresholds that page someone."""

    project: str
    prefix: str
    api_service_name: pulumi.Input[str]
    api_url: pulumi.Input[str]
    notification_email: str
    error_ratio: float = 0.05
    p95_latency_ms: int = 2000
    job_failure_ratio: float = 0.10
    oldest_queued_seconds: int = 300
    labels: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check(
            self,
            notification_email=Email,
            error_ratio=Ratio,
            p95_latency_ms=LatencyMs,
            job_failure_ratio=Ratio,
            oldest_queued_seconds=QueueAgeSeconds,
        )


class Monitoring(pulumi.ComponentResource):
    """One email channel, one uptime check, two log-based metrics and five alert policies."""

    channel: pulumi.Output[str]

    def __init__(self, name: str, args: MonitoringArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("liftoff:index:Monitoring", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        channel = monitoring.NotificationChannel(
            f"{name}-email",
            monitoring.NotificationChannelArgs(
                project=args.project,
                type="email",
                display_name=f"{args.prefix} on-call",
                labels={"email_address": args.notification_email},
                user_labels=dict(args.labels),
            ),
            opts=child,
        )
        host = pulumi.Output.from_input(args.api_url).apply(
            lambda url: url.removeprefix("https://").rstrip("/")
        )
        uptime = monitoring.UptimeCheckConfig(
            f"{name}-uptime",
            monitoring.UptimeCheckConfigArgs(
                project=args.project,
                display_name=f"{args.prefix} API /health",
                period="60s",
                timeout="10s",
                http_check=monitoring.UptimeCheckConfigHttpCheckArgs(
                    path="/health", port=443, use_ssl=True, validate_ssl=True, request_method="GET"
                ),
                monitored_resource=monitoring.UptimeCheckConfigMonitoredResourceArgs(
                    type="uptime_url", labels={"host": host, "project_id": args.project}
                ),
                user_labels=dict(args.labels),
            ),
            opts=child,
        )
        # The worker logs one line per finished attempt and, once a minute, the queue's state.
        jobs_metric = logging.Metric(
            f"{name}-job-outcomes",
            logging.MetricArgs(
                project=args.project,
                name=f"{args.prefix}-job-outcomes",
                description="Finished job attempts by outcome, from the worker's logs.",
                filter=f'resource.type="{WORKER_RESOURCE}" AND jsonPayload.message="job_finished"'
                " AND jsonPayload.written=true",
                metric_descriptor=logging.MetricMetricDescriptorArgs(
                    metric_kind="DELTA",
                    value_type="INT64",
                    labels=[logging.MetricMetricDescriptorLabelArgs(key="outcome", value_type="STRING")],
                ),
                label_extractors={"outcome": "EXTRACT(jsonPayload.outcome)"},
            ),
            opts=child,
        )
        age_metric = logging.Metric(
            f"{name}-queue-age",
            logging.MetricArgs(
                project=args.project,
                name=f"{args.prefix}-queue-oldest-age",
                description="Age of the oldest queued job, from the worker's queue_stats lines.",
                filter=f'resource.type="{WORKER_RESOURCE}" AND jsonPayload.message="queue_stats"',
                metric_descriptor=logging.MetricMetricDescriptorArgs(
                    metric_kind="DELTA", value_type="DISTRIBUTION", unit="s"
                ),
                value_extractor="EXTRACT(jsonPayload.oldest_age_seconds)",
                bucket_options=logging.MetricBucketOptionsArgs(
                    exponential_buckets=logging.MetricBucketOptionsExponentialBucketsArgs(
                        num_finite_buckets=32, growth_factor=1.5, scale=1
                    )
                ),
            ),
            opts=child,
        )

        def service_filter(service: str) -> str:
            return f'monitored_resource="cloud_run_revision",service_name="{service}"'

        def promql(title: str, query: pulumi.Input[str], doc: str, duration: str = "300s") -> None:
            slug = title.lower().replace(" ", "-")
            monitoring.AlertPolicy(
                f"{name}-{slug}",
                monitoring.AlertPolicyArgs(
                    project=args.project,
                    display_name=f"{args.prefix}: {title}",
                    combiner="OR",
                    severity="ERROR",
                    notification_channels=[channel.name],
                    user_labels=dict(args.labels),
                    documentation=monitoring.AlertPolicyDocumentationArgs(
                        content=doc, mime_type="text/markdown"
                    ),
                    conditions=[
                        monitoring.AlertPolicyConditionArgs(
                            display_name=title,
                            condition_prometheus_query_language=monitoring.AlertPolicyConditionConditionPrometheusQueryLanguageArgs(
                                query=query, duration=duration, evaluation_interval="60s"
                            ),
                        )
                    ],
                ),
                opts=pulumi.ResourceOptions(parent=self, depends_on=[jobs_metric, age_metric]),
            )

        service = pulumi.Output.from_input(args.api_service_name)
        promql(
            "API 5xx ratio",
            service.apply(
                lambda s: (
                    "sum(rate(run_googleapis_com:request_count"
                    f'{{{service_filter(s)},response_code_class="5xx"}}[5m]))'
                    " / sum(rate(run_googleapis_com:request_count"
                    f"{{{service_filter(s)}}}[5m])) > {args.error_ratio}"
                )
            ),
            f"More than {args.error_ratio:.0%} of API requests fail with 5xx. Check the API's logs; roll back"
            " by pinning traffic to the last good revision (README, Rollback).",
        )
        promql(
            "API p95 latency",
            service.apply(
                lambda s: (
                    "histogram_quantile(0.95, sum by (le) (rate("
                    f"run_googleapis_com:request_latencies_bucket{{{service_filter(s)}}}[5m])))"
                    f" > {args.p95_latency_ms}"
                )
            ),
            f"The API's 95th percentile latency is above {args.p95_latency_ms} ms.",
        )
        metric = f"logging_googleapis_com:user_{args.prefix.replace('-', '_')}_job_outcomes"
        promql(
            "Job failure rate",
            f'sum(rate({metric}{{{WORKER_SELECTOR},outcome=~"failed|retry"}}[15m]))'
            f" / sum(rate({metric}{{{WORKER_SELECTOR}}}[15m])) > {args.job_failure_ratio}",
            f"More than {args.job_failure_ratio:.0%} of job attempts fail. Dead-lettered jobs are `failed`"
            " in the API with their last error.",
            duration="600s",
        )
        age = f"logging_googleapis_com:user_{args.prefix.replace('-', '_')}_queue_oldest_age"
        promql(
            "Oldest queued job",
            f"histogram_quantile(0.99, sum by (le) (rate({age}_bucket{{{WORKER_SELECTOR}}}[5m])))"
            f" > {args.oldest_queued_seconds}",
            f"A job has waited more than {args.oldest_queued_seconds} s. Workers may be down or too few.",
        )
        monitoring.AlertPolicy(
            f"{name}-uptime-failing",
            monitoring.AlertPolicyArgs(
                project=args.project,
                display_name=f"{args.prefix}: API uptime check failing",
                combiner="OR",
                severity="CRITICAL",
                notification_channels=[channel.name],
                user_labels=dict(args.labels),
                conditions=[
                    monitoring.AlertPolicyConditionArgs(
                        display_name="/health failing",
                        condition_threshold=monitoring.AlertPolicyConditionConditionThresholdArgs(
                            filter=uptime.uptime_check_id.apply(
                                lambda check: (
                                    'metric.type="monitoring.googleapis.com/uptime_check/check_passed"'
                                    f' AND resource.type="uptime_url" AND metric.label.check_id="{check}"'
                                )
                            ),
                            comparison="COMPARISON_GT",
                            threshold_value=1,
                            duration="300s",
                            aggregations=[
                                monitoring.AlertPolicyConditionConditionThresholdAggregationArgs(
                                    alignment_period="300s",
                                    per_series_aligner="ALIGN_NEXT_OLDER",
                                    cross_series_reducer="REDUCE_COUNT_FALSE",
                                    group_by_fields=["resource.label.*"],
                                )
                            ],
                        ),
                    )
                ],
            ),
            opts=child,
        )
        self.channel = channel.name
        self.register_outputs({"channel": self.channel})
