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


# User-defined log-based metrics, by name after the stack's prefix. In PromQL each is
# `logging_googleapis_com:user_<name>` with its dashes as underscores (the page cited above,
# "Mapping Cloud Monitoring metric names to PromQL").
JOB_OUTCOMES = "job-outcomes"
QUEUE_AGE = "queue-oldest-age"


class Monitoring(pulumi.ComponentResource):
    """One email channel, one uptime check, two log-based metrics and five alert policies."""

    channel: pulumi.Output[str]

    def __init__(self, name: str, args: MonitoringArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("liftoff:index:Monitoring", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        channel = _email_channel(name, args, child)
        uptime = _uptime_check(name, args, child)
        metrics = _worker_metrics(name, args, child)
        # Every PromQL alert waits for the log-based metrics, which the worker's alerts query.
        after_metrics = pulumi.ResourceOptions(parent=self, depends_on=metrics)
        for alert in (*_api_alerts(args), *_worker_alerts(args)):
            _promql_policy(name, args, alert, channel.name, after_metrics)
        _uptime_policy(name, args, uptime, channel.name, child)
        self.channel = channel.name
        self.register_outputs({"channel": self.channel})


def _email_channel(
    name: str, args: MonitoringArgs, opts: pulumi.ResourceOptions
) -> monitoring.NotificationChannel:
    return monitoring.NotificationChannel(
        f"{name}-email",
        monitoring.NotificationChannelArgs(
            project=args.project,
            type="email",
            display_name=f"{args.prefix} on-call",
            labels={"email_address": args.notification_email},
            user_labels=dict(args.labels),
        ),
        opts=opts,
    )


def _uptime_check(
    name: str, args: MonitoringArgs, opts: pulumi.ResourceOptions
) -> monitoring.UptimeCheckConfig:
    host = pulumi.Output.from_input(args.api_url).apply(_host)
    return monitoring.UptimeCheckConfig(
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
        opts=opts,
    )


def _host(url: str) -> str:
    return url.removeprefix("https://").rstrip("/")


def _worker_metrics(name: str, args: MonitoringArgs, opts: pulumi.ResourceOptions) -> list[logging.Metric]:
    """The worker logs one line per finished attempt and, once a minute, the queue's state."""
    outcomes = _worker_log_metric(
        f"{name}-job-outcomes",
        args,
        opts,
        metric=JOB_OUTCOMES,
        description="Finished job attempts by outcome, from the worker's logs.",
        entries='jsonPayload.message="job_finished" AND jsonPayload.written=true',
        descriptor=logging.MetricMetricDescriptorArgs(
            metric_kind="DELTA",
            value_type="INT64",
            labels=[logging.MetricMetricDescriptorLabelArgs(key="outcome", value_type="STRING")],
        ),
        label_extractors={"outcome": "EXTRACT(jsonPayload.outcome)"},
    )
    age = _worker_log_metric(
        f"{name}-queue-age",
        args,
        opts,
        metric=QUEUE_AGE,
        description="Age of the oldest queued job, from the worker's queue_stats lines.",
        entries='jsonPayload.message="queue_stats"',
        descriptor=logging.MetricMetricDescriptorArgs(
            metric_kind="DELTA", value_type="DISTRIBUTION", unit="s"
        ),
        value_extractor="EXTRACT(jsonPayload.oldest_age_seconds)",
        bucket_options=logging.MetricBucketOptionsArgs(
            exponential_buckets=logging.MetricBucketOptionsExponentialBucketsArgs(
                num_finite_buckets=32, growth_factor=1.5, scale=1
            )
        ),
    )
    return [outcomes, age]


def _worker_log_metric(
    resource_name: str,
    args: MonitoringArgs,
    opts: pulumi.ResourceOptions,
    *,
    metric: str,
    description: str,
    entries: str,
    descriptor: logging.MetricMetricDescriptorArgs,
    label_extractors: Mapping[str, str] | None = None,
    value_extractor: str | None = None,
    bucket_options: logging.MetricBucketOptionsArgs | None = None,
) -> logging.Metric:
    """A log-based metric over the worker pool's log entries that match `entries`."""
    return logging.Metric(
        resource_name,
        logging.MetricArgs(
            project=args.project,
            name=f"{args.prefix}-{metric}",
            description=description,
            filter=f'resource.type="{WORKER_RESOURCE}" AND {entries}',
            metric_descriptor=descriptor,
            label_extractors=dict(label_extractors) if label_extractors is not None else None,
            value_extractor=value_extractor,
            bucket_options=bucket_options,
        ),
        opts=opts,
    )


def _promql_metric(args: MonitoringArgs, metric: str) -> str:
    return f"logging_googleapis_com:user_{args.prefix.replace('-', '_')}_{metric.replace('-', '_')}"


@dataclass(frozen=True)
class _Alert:
    """A PromQL alert: its title (which also names the policy), query and runbook line."""

    title: str
    query: pulumi.Input[str]
    doc: str
    duration: str = "300s"


def _api_alerts(args: MonitoringArgs) -> list[_Alert]:
    """Errors and latency of the API service, from Cloud Run's request metrics."""
    service = pulumi.Output.from_input(args.api_service_name)
    return [
        _Alert(
            "API 5xx ratio",
            service.apply(lambda s: _error_ratio_query(s, args.error_ratio)),
            f"More than {args.error_ratio:.0%} of API requests fail with 5xx. Check the API's logs; if a"
            " release caused it, `make rollback` sends all traffic back to the last good one.",
        ),
        _Alert(
            "API p95 latency",
            service.apply(lambda s: _latency_query(s, args.p95_latency_ms)),
            f"The API's 95th percentile latency is above {args.p95_latency_ms} ms.",
        ),
    ]


def _service_selector(service: str) -> str:
    return f'monitored_resource="cloud_run_revision",service_name="{service}"'


def _error_ratio_query(service: str, ratio: float) -> str:
    requests = f"run_googleapis_com:request_count{{{_service_selector(service)}"
    return f'sum(rate({requests},response_code_class="5xx"}}[5m])) / sum(rate({requests}}}[5m])) > {ratio}'


def _latency_query(service: str, threshold_ms: int) -> str:
    buckets = f"run_googleapis_com:request_latencies_bucket{{{_service_selector(service)}}}"
    return f"histogram_quantile(0.95, sum by (le) (rate({buckets}[5m]))) > {threshold_ms}"


def _worker_alerts(args: MonitoringArgs) -> list[_Alert]:
    """Failing attempts and a stuck queue, from the worker's log-based metrics."""
    outcomes = _promql_metric(args, JOB_OUTCOMES)
    age = _promql_metric(args, QUEUE_AGE)
    return [
        _Alert(
            "Job failure rate",
            f'sum(rate({outcomes}{{{WORKER_SELECTOR},outcome=~"failed|retry"}}[15m]))'
            f" / sum(rate({outcomes}{{{WORKER_SELECTOR}}}[15m])) > {args.job_failure_ratio}",
            f"More than {args.job_failure_ratio:.0%} of job attempts fail. Dead-lettered jobs are `failed`"
            " in the API with their last error.",
            duration="600s",
        ),
        _Alert(
            "Oldest queued job",
            f"histogram_quantile(0.99, sum by (le) (rate({age}_bucket{{{WORKER_SELECTOR}}}[5m])))"
            f" > {args.oldest_queued_seconds}",
            f"A job has waited more than {args.oldest_queued_seconds} s. Workers may be down or too few.",
        ),
    ]


def _promql_policy(
    name: str, args: MonitoringArgs, alert: _Alert, channel: pulumi.Input[str], opts: pulumi.ResourceOptions
) -> monitoring.AlertPolicy:
    return monitoring.AlertPolicy(
        f"{name}-{alert.title.lower().replace(' ', '-')}",
        monitoring.AlertPolicyArgs(
            project=args.project,
            display_name=f"{args.prefix}: {alert.title}",
            combiner="OR",
            severity="ERROR",
            notification_channels=[channel],
            user_labels=dict(args.labels),
            documentation=monitoring.AlertPolicyDocumentationArgs(
                content=alert.doc, mime_type="text/markdown"
            ),
            conditions=[
                monitoring.AlertPolicyConditionArgs(
                    display_name=alert.title,
                    condition_prometheus_query_language=monitoring.AlertPolicyConditionConditionPrometheusQueryLanguageArgs(
                        query=alert.query, duration=alert.duration, evaluation_interval="60s"
                    ),
                )
            ],
        ),
        opts=opts,
    )


def _uptime_policy(
    name: str,
    args: MonitoringArgs,
    uptime: monitoring.UptimeCheckConfig,
    channel: pulumi.Input[str],
    opts: pulumi.ResourceOptions,
) -> monitoring.AlertPolicy:
    """Critical: the uptime check's /health probe fails from more than one location."""
    return monitoring.AlertPolicy(
        f"{name}-uptime-failing",
        monitoring.AlertPolicyArgs(
            project=args.project,
            display_name=f"{args.prefix}: API uptime check failing",
            combiner="OR",
            severity="CRITICAL",
            notification_channels=[channel],
            user_labels=dict(args.labels),
            conditions=[
                monitoring.AlertPolicyConditionArgs(
                    display_name="/health failing",
                    condition_threshold=monitoring.AlertPolicyConditionConditionThresholdArgs(
                        filter=uptime.uptime_check_id.apply(_uptime_filter),
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
        opts=opts,
    )


def _uptime_filter(check_id: str) -> str:
    return (
        'metric.type="monitoring.googleapis.com/uptime_check/check_passed"'
        f' AND resource.type="uptime_url" AND metric.label.check_id="{check_id}"'
    )
