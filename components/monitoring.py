"""Monitoring: an uptime check on the API and alerts on errors, latency, job failures and queue age."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import pulumi
from pulumi_gcp import cloudrunv2 as run
from pulumi_gcp import logging, monitoring, organizations

from components.rules import Email, LatencyMs, QueueAgeSeconds, Ratio, check

# The worker's log lines come from a Cloud Run worker pool, the API's requests from a Cloud Run
# revision. A log-based metric maps to every monitored resource type its entries come from, and in
# PromQL such a metric must name one with the `monitored_resource` label
# (https://cloud.google.com/monitoring/promql/promql-mapping, "The monitored_resource label").
# The worker pool's type is the one `gcloud run worker-pools logs` filters on.
WORKER_RESOURCE = "cloud_run_worker_pool"
API_RESOURCE = "cloud_run_revision"
# Each resource is one workload in one project and region, told apart by the labels of its monitored
# resource type (https://cloud.google.com/monitoring/api/resources#tag_cloud_run_revision and
# #tag_cloud_run_worker_pool; the same labels in logs, https://cloud.google.com/logging/docs/api/v2/resource-list):
# a project shared by two stacks holds both stacks' workloads, so every filter and query names its own.
NAME_LABEL = {API_RESOURCE: "service_name", WORKER_RESOURCE: "worker_pool_name"}
# A service-agent-authenticated uptime check calls with an ID token of the project's Monitoring service
# agent (https://cloud.google.com/monitoring/api/ref_v3/rest/v3/projects.uptimeCheckConfigs#ServiceAgentAuthentication;
# the agent: https://cloud.google.com/iam/docs/service-agents, "Monitoring Notification Service Agent").
# A private Cloud Run service admits it once it holds roles/run.invoker on that service
# (https://cloud.google.com/run/docs/securing/managing-access).
MONITORING_AGENT = "service-{number}@gcp-sa-monitoring-notification.iam.gserviceaccount.com"


def monitoring_agent(project_number: str) -> str:
    """The IAM member of a project's Monitoring service agent, from the project's number."""
    return "serviceAccount:" + MONITORING_AGENT.format(number=project_number)


@dataclass(frozen=True)
class MonitoringArgs:
    """What to watch, and the thresholds that page someone.

    `api_public` says whether anyone may call the API; a private one admits the uptime check's
    caller (the Monitoring service agent) as an invoker of that one service.
    """

    project: str
    region: str
    prefix: str
    api_service_name: pulumi.Input[str]
    api_url: pulumi.Input[str]
    worker_pool_name: pulumi.Input[str]
    notification_email: str
    # An on-demand pool's scaler (components/scaler.py) logs the queue's state too: at zero
    # instances no worker does, and a queue that ages there is one the scaler failed to wake.
    scaler_service_name: pulumi.Input[str] | None = None
    api_public: bool = False
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
    """One email channel, one uptime check, two log-based metrics and five alert policies.

    Every one names this stack's own API service and worker pool (by name and region), so two
    stacks in one project each watch their own. A private API also gets one grant: the uptime
    check's caller may invoke it.
    """

    channel: pulumi.Output[str]

    def __init__(self, name: str, args: MonitoringArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("liftoff:index:Monitoring", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        channel = _email_channel(name, args, child)
        invoker = _uptime_invoker(name, args, child)
        # The check starts once it may call the API, not with a few minutes of 403s.
        uptime = _uptime_check(name, args, pulumi.ResourceOptions(parent=self, depends_on=invoker))
        metrics = _worker_metrics(name, args, child)
        # Every PromQL alert waits for the log-based metrics, which the worker's alerts query.
        after_metrics = pulumi.ResourceOptions(parent=self, depends_on=metrics)
        for alert in (*_api_alerts(args), *_worker_alerts(args), *_scaler_alerts(args)):
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


def _uptime_invoker(
    name: str, args: MonitoringArgs, opts: pulumi.ResourceOptions
) -> list[run.ServiceIamMember]:
    """For a private API: the Monitoring service agent may invoke this one service, nothing more.

    A public API needs no grant (allUsers may call it), so it gets none.
    """
    if args.api_public:
        return []
    number = organizations.get_project_output(project_id=args.project).number
    grant = run.ServiceIamMember(
        f"{name}-uptime-invoker",
        run.ServiceIamMemberArgs(
            name=args.api_service_name,
            location=args.region,
            project=args.project,
            role="roles/run.invoker",
            member=number.apply(monitoring_agent),
        ),
        opts=opts,
    )
    return [grant]


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
                path="/health",
                port=443,
                use_ssl=True,
                validate_ssl=True,
                request_method="GET",
                # Always, public or not: Cloud Run passes a public service's Authorization header
                # through unchecked (and /health reads none), so the check is the same either way,
                # and a switch to private needs only the grant, never a change to the check.
                service_agent_authentication=monitoring.UptimeCheckConfigHttpCheckServiceAgentAuthenticationArgs(
                    type="OIDC_TOKEN"
                ),
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
        description="Age of the oldest queued job, from the queue_stats lines of the worker (and of"
        " the pool's scaler, when it has one).",
        entries='jsonPayload.message="queue_stats"',
        scaler_service_name=args.scaler_service_name,
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
    scaler_service_name: pulumi.Input[str] | None = None,
) -> logging.Metric:
    """A log-based metric over the worker pool's log entries that match `entries` (and the
    scaler service's, when it is named)."""
    return logging.Metric(
        resource_name,
        logging.MetricArgs(
            project=args.project,
            name=f"{args.prefix}-{metric}",
            description=description,
            filter=pulumi.Output.all(args.worker_pool_name, scaler_service_name).apply(
                lambda names: f"{_sources(names[0], names[1], args.region)} AND {entries}"
            ),
            metric_descriptor=descriptor,
            label_extractors=dict(label_extractors) if label_extractors is not None else None,
            value_extractor=value_extractor,
            bucket_options=bucket_options,
        ),
        opts=opts,
    )


def _sources(pool: str, scaler: str | None, region: str) -> str:
    """The worker pool's entries, or the pool's and its scaler's."""
    worker = _log_resource(WORKER_RESOURCE, pool, region)
    if scaler is None:
        return worker
    return f"(({worker}) OR ({_log_resource(API_RESOURCE, scaler, region)}))"


def _log_resource(resource: str, name: str, region: str) -> str:
    """A logging filter for the entries of one workload: its type, its name and its region."""
    return (
        f'resource.type="{resource}" AND resource.labels.{NAME_LABEL[resource]}="{name}"'
        f' AND resource.labels.location="{region}"'
    )


def _selector(resource: str, name: str, region: str) -> str:
    """A PromQL selector for the series of one workload: its type, its region and its name."""
    return f'monitored_resource="{resource}",location="{region}",{NAME_LABEL[resource]}="{name}"'


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
            service.apply(
                lambda s: _error_ratio_query(_selector(API_RESOURCE, s, args.region), args.error_ratio)
            ),
            f"More than {args.error_ratio:.0%} of API requests fail with 5xx. Check the API's logs; if a"
            " release caused it, `make rollback` sends all traffic back to the last good one.",
        ),
        _Alert(
            "API p95 latency",
            service.apply(
                lambda s: _latency_query(_selector(API_RESOURCE, s, args.region), args.p95_latency_ms)
            ),
            f"The API's 95th percentile latency is above {args.p95_latency_ms} ms.",
        ),
    ]


def _error_ratio_query(selector: str, ratio: float) -> str:
    requests = f"run_googleapis_com:request_count{{{selector}"
    return f'sum(rate({requests},response_code_class="5xx"}}[5m])) / sum(rate({requests}}}[5m])) > {ratio}'


def _latency_query(selector: str, threshold_ms: int) -> str:
    buckets = f"run_googleapis_com:request_latencies_bucket{{{selector}}}"
    return f"histogram_quantile(0.95, sum by (le) (rate({buckets}[5m]))) > {threshold_ms}"


def _worker_alerts(args: MonitoringArgs) -> list[_Alert]:
    """Failing attempts and a stuck queue, from the worker's log-based metrics."""
    pool = pulumi.Output.from_input(args.worker_pool_name)
    return [
        _Alert(
            "Job failure rate",
            pool.apply(lambda p: _failure_query(args, _selector(WORKER_RESOURCE, p, args.region))),
            f"More than {args.job_failure_ratio:.0%} of job attempts fail. Dead-lettered jobs are `failed`"
            " in the API with their last error.",
            duration="600s",
        ),
        _Alert(
            "Oldest queued job",
            pulumi.Output.all(pool, args.scaler_service_name).apply(
                lambda v: _queue_age_alert(args, v[0], v[1])
            ),
            f"A job has waited more than {args.oldest_queued_seconds} s. Workers may be down or too few,"
            " or an on-demand pool's scaler failed to start them (its `reconcile_failed` log lines).",
        ),
    ]


def _scaler_alerts(args: MonitoringArgs) -> list[_Alert]:
    """An on-demand pool's scaler that keeps failing: its requests from Cloud Run's metrics.

    Its queue_stats lines come after it has read the database, so a scaler that cannot read it,
    or that Cloud Run refuses to let Cloud Scheduler call, writes none, and a pool at zero then
    shows no ageing queue either; its answers (a 503 of its own, a 403 in front of it) still count.
    """
    if args.scaler_service_name is None:
        return []
    scaler = pulumi.Output.from_input(args.scaler_service_name)
    return [
        _Alert(
            "Scaler failing",
            scaler.apply(lambda name: _scaler_failure_query(_selector(API_RESOURCE, name, args.region))),
            "The worker pool's scaler has answered with errors for 15 minutes: an on-demand pool may be"
            " at zero instances with jobs queued. Read its `reconcile_failed` lines (docs/operations.md,"
            " `Oldest queued job`).",
            duration="900s",
        )
    ]


def _scaler_failure_query(selector: str) -> str:
    requests = f"run_googleapis_com:request_count{{{selector}"
    return f'sum(rate({requests},response_code_class!="2xx"}}[10m])) > 0'


def _failure_query(args: MonitoringArgs, selector: str) -> str:
    outcomes = _promql_metric(args, JOB_OUTCOMES)
    return (
        f'sum(rate({outcomes}{{{selector},outcome=~"failed|retry"}}[15m]))'
        f" / sum(rate({outcomes}{{{selector}}}[15m])) > {args.job_failure_ratio}"
    )


def _queue_age_alert(args: MonitoringArgs, pool: str, scaler: str | None) -> str:
    """Either source's oldest job past the limit: the worker's lines, or the scaler's when the
    pool has one (PromQL `or`: the union of both series)."""
    worker = _queue_age_query(args, _selector(WORKER_RESOURCE, pool, args.region))
    if scaler is None:
        return worker
    return f"({worker}) or ({_queue_age_query(args, _selector(API_RESOURCE, scaler, args.region))})"


def _queue_age_query(args: MonitoringArgs, selector: str) -> str:
    age = _promql_metric(args, QUEUE_AGE)
    quantile = f"histogram_quantile(0.99, sum by (le) (rate({age}_bucket{{{selector}}}[5m])))"
    return f"{quantile} > {args.oldest_queued_seconds}"


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
