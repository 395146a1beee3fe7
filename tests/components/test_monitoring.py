"""Monitoring under the mock engine: the channel, the uptime check, the log metrics and the alerts."""

from __future__ import annotations

from typing import Any

import pytest

from components.monitoring import Monitoring, MonitoringArgs, monitoring_agent
from tests.components.conftest import Declare, Declared
from tools.render import Registered, project_lookup

pytestmark = pytest.mark.unit

TYPE = "liftoff:index:Monitoring"
CHANNEL = "gcp:monitoring/notificationChannel:NotificationChannel"
UPTIME = "gcp:monitoring/uptimeCheckConfig:UptimeCheckConfig"
METRIC = "gcp:logging/metric:Metric"
POLICY = "gcp:monitoring/alertPolicy:AlertPolicy"
INVOKER = "gcp:cloudrunv2/serviceIamMember:ServiceIamMember"
LABELS = {"app": "liftoff", "env": "prod"}
WORKER = (
    'monitored_resource="cloud_run_worker_pool",location="europe-west1",'
    'worker_pool_name="liftoff-prod-worker"'
)
API = 'monitored_resource="cloud_run_revision",location="europe-west1",service_name="liftoff-prod-api"'
# The worker pool's own log entries: its type, its name and its region.
WORKER_ENTRIES = (
    'resource.type="cloud_run_worker_pool" AND resource.labels.worker_pool_name="liftoff-prod-worker"'
    ' AND resource.labels.location="europe-west1"'
)


def monitoring_args(**overrides: Any) -> MonitoringArgs:
    values: dict[str, Any] = {
        "project": "acme-prod",
        "region": "europe-west1",
        "prefix": "liftoff-prod",
        "api_service_name": "liftoff-prod-api",
        "api_url": "https://liftoff-prod-api-xyz-ew.a.run.app/",
        "worker_pool_name": "liftoff-prod-worker",
        "notification_email": "oncall@example.com",
        "labels": LABELS,
        **overrides,
    }
    return MonitoringArgs(**values)


@pytest.fixture
def declared(declare: Declare) -> Declared:
    return declare(lambda: {"channel": Monitoring("monitoring", monitoring_args()).channel})


def policy(declared: Declared, name: str) -> Registered:
    return declared.one(POLICY, f"monitoring-{name}")


def promql(registered: Registered) -> dict[str, Any]:
    (condition,) = registered.inputs["conditions"]
    query: dict[str, Any] = condition["conditionPrometheusQueryLanguage"]
    return query


def test_registers_its_children_under_itself(declared):
    assert {(r.type, r.name) for r in declared.children(TYPE)} == {
        (CHANNEL, "monitoring-email"),
        (UPTIME, "monitoring-uptime"),
        (INVOKER, "monitoring-uptime-invoker"),
        (METRIC, "monitoring-job-outcomes"),
        (METRIC, "monitoring-queue-age"),
        (POLICY, "monitoring-api-5xx-ratio"),
        (POLICY, "monitoring-api-p95-latency"),
        (POLICY, "monitoring-job-failure-rate"),
        (POLICY, "monitoring-oldest-queued-job"),
        (POLICY, "monitoring-uptime-failing"),
    }
    assert len(declared.resources) == 11, "the component and its ten children, nothing else"
    assert all(r.inputs["project"] == "acme-prod" for r in declared.children(TYPE))


def test_one_email_channel_is_the_output(declared):
    channel = declared.one(CHANNEL)
    assert channel.inputs == {
        "project": "acme-prod",
        "type": "email",
        "displayName": "liftoff-prod on-call",
        "labels": {"email_address": "oncall@example.com"},
        "userLabels": LABELS,
    }
    assert declared.outputs["channel"] == channel.outputs["name"]


def test_the_uptime_check_probes_the_apis_health_over_tls(declared):
    uptime = declared.one(UPTIME)
    assert uptime.inputs == {
        "project": "acme-prod",
        "displayName": "liftoff-prod API /health",
        "period": "60s",
        "timeout": "10s",
        "httpCheck": {
            "path": "/health",
            "port": 443,
            "useSsl": True,
            "validateSsl": True,
            "requestMethod": "GET",
            # An ID token of the project's Monitoring service agent: a private API admits it.
            "serviceAgentAuthentication": {"type": "OIDC_TOKEN"},
        },
        # The host alone: the URL's scheme and trailing slash are not part of it.
        "monitoredResource": {
            "type": "uptime_url",
            "labels": {"host": "liftoff-prod-api-xyz-ew.a.run.app", "project_id": "acme-prod"},
        },
        "userLabels": LABELS,
    }


def test_a_private_api_lets_the_monitoring_agent_invoke_that_one_service(declared):
    (grant,) = declared.of_type(INVOKER)
    number = project_lookup("acme-prod")["number"]
    assert grant.inputs == {
        "name": "liftoff-prod-api",
        "location": "europe-west1",
        "project": "acme-prod",
        "role": "roles/run.invoker",
        "member": f"serviceAccount:service-{number}@gcp-sa-monitoring-notification.iam.gserviceaccount.com",
    }
    # The check starts calling only once it may.
    assert grant.urn in declared.one(UPTIME).dependencies


def test_a_public_api_grants_nothing_and_the_check_still_authenticates(declare):
    declared = declare(
        lambda: {"channel": Monitoring("monitoring", monitoring_args(api_public=True)).channel}
    )
    assert declared.of_type(INVOKER) == []
    assert declared.one(UPTIME).inputs["httpCheck"]["serviceAgentAuthentication"] == {"type": "OIDC_TOKEN"}


def test_the_monitoring_agent_is_the_projects_notification_service_agent():
    assert monitoring_agent("123456789012") == (
        "serviceAccount:service-123456789012@gcp-sa-monitoring-notification.iam.gserviceaccount.com"
    )


def test_log_metrics_count_job_outcomes_and_measure_queue_age_from_the_worker_pool(declared):
    outcomes = declared.one(METRIC, "monitoring-job-outcomes")
    assert outcomes.inputs == {
        "project": "acme-prod",
        "name": "liftoff-prod-job-outcomes",
        "description": "Finished job attempts by outcome, from the worker's logs.",
        "filter": f'{WORKER_ENTRIES} AND jsonPayload.message="job_finished" AND jsonPayload.written=true',
        "metricDescriptor": {
            "metricKind": "DELTA",
            "valueType": "INT64",
            "labels": [{"key": "outcome", "valueType": "STRING"}],
        },
        "labelExtractors": {"outcome": "EXTRACT(jsonPayload.outcome)"},
    }
    age = declared.one(METRIC, "monitoring-queue-age")
    assert age.inputs == {
        "project": "acme-prod",
        "name": "liftoff-prod-queue-oldest-age",
        "description": "Age of the oldest queued job, from the queue_stats lines of the worker (and of"
        " the pool's scaler, when it has one).",
        "filter": f'{WORKER_ENTRIES} AND jsonPayload.message="queue_stats"',
        "metricDescriptor": {"metricKind": "DELTA", "valueType": "DISTRIBUTION", "unit": "s"},
        "valueExtractor": "EXTRACT(jsonPayload.oldest_age_seconds)",
        "bucketOptions": {"exponentialBuckets": {"numFiniteBuckets": 32, "growthFactor": 1.5, "scale": 1}},
    }


def test_an_on_demand_pools_queue_age_is_read_from_its_scaler_too(declare):
    """At zero instances no worker logs the queue: the scaler's lines keep the alert seeing it."""
    scaled = declare(
        lambda: {
            "channel": Monitoring(
                "monitoring", monitoring_args(scaler_service_name="liftoff-prod-scaler")
            ).channel
        }
    )
    scaler = (
        'resource.type="cloud_run_revision" AND resource.labels.service_name="liftoff-prod-scaler"'
        ' AND resource.labels.location="europe-west1"'
    )
    age = scaled.one(METRIC, "monitoring-queue-age").inputs
    assert age["filter"] == f'(({WORKER_ENTRIES}) OR ({scaler})) AND jsonPayload.message="queue_stats"'
    failing = policy(scaled, "scaler-failing")
    scaler_requests = (
        'run_googleapis_com:request_count{monitored_resource="cloud_run_revision",location="europe-west1",'
        'service_name="liftoff-prod-scaler",response_code_class!="2xx"}'
    )
    assert promql(failing) == {
        "query": f"sum(rate({scaler_requests}[10m])) > 0",
        "duration": "900s",
        "evaluationInterval": "60s",
    }
    assert "reconcile_failed" in failing.inputs["documentation"]["content"]
    assert len(scaled.of_type(POLICY)) == 6
    outcomes = scaled.one(METRIC, "monitoring-job-outcomes").inputs
    assert outcomes["filter"].startswith(WORKER_ENTRIES), "attempts are the worker's alone"
    metric = "logging_googleapis_com:user_liftoff_prod_queue_oldest_age_bucket"
    scaler_series = (
        'monitored_resource="cloud_run_revision",location="europe-west1",service_name="liftoff-prod-scaler"'
    )
    assert promql(policy(scaled, "oldest-queued-job"))["query"] == (
        f"(histogram_quantile(0.99, sum by (le) (rate({metric}{{{WORKER}}}[5m]))) > 300)"
        f" or (histogram_quantile(0.99, sum by (le) (rate({metric}{{{scaler_series}}}[5m]))) > 300)"
    )


def test_every_policy_notifies_the_channel_with_the_labels(declared):
    channel = declared.one(CHANNEL).outputs["name"]
    policies = declared.of_type(POLICY)
    assert len(policies) == 5
    for registered in policies:
        assert registered.inputs["notificationChannels"] == [channel], registered.name
        assert registered.inputs["userLabels"] == LABELS, registered.name
        assert registered.inputs["combiner"] == "OR", registered.name
        assert registered.inputs["displayName"].startswith("liftoff-prod: "), registered.name


@pytest.mark.parametrize(
    ("name", "title", "query", "duration", "doc"),
    [
        (
            "api-5xx-ratio",
            "API 5xx ratio",
            f'sum(rate(run_googleapis_com:request_count{{{API},response_code_class="5xx"}}[5m]))'
            f" / sum(rate(run_googleapis_com:request_count{{{API}}}[5m])) > 0.05",
            "300s",
            "More than 5% of API requests fail with 5xx.",
        ),
        (
            "api-p95-latency",
            "API p95 latency",
            "histogram_quantile(0.95, sum by (le) (rate("
            f"run_googleapis_com:request_latencies_bucket{{{API}}}[5m]))) > 2000",
            "300s",
            "The API's 95th percentile latency is above 2000 ms.",
        ),
        (
            "job-failure-rate",
            "Job failure rate",
            "sum(rate(logging_googleapis_com:user_liftoff_prod_job_outcomes"
            f'{{{WORKER},outcome=~"failed|retry"}}[15m]))'
            f" / sum(rate(logging_googleapis_com:user_liftoff_prod_job_outcomes{{{WORKER}}}[15m])) > 0.1",
            "600s",
            "More than 10% of job attempts fail.",
        ),
        (
            "oldest-queued-job",
            "Oldest queued job",
            "histogram_quantile(0.99, sum by (le) (rate("
            f"logging_googleapis_com:user_liftoff_prod_queue_oldest_age_bucket{{{WORKER}}}[5m]))) > 300",
            "300s",
            "A job has waited more than 300 s.",
        ),
    ],
)
def test_promql_policies_page_on_their_thresholds(declared, name, title, query, duration, doc):
    registered = policy(declared, name)
    assert registered.inputs["displayName"] == f"liftoff-prod: {title}"
    assert registered.inputs["severity"] == "ERROR"
    (condition,) = registered.inputs["conditions"]
    assert condition["displayName"] == title
    assert promql(registered) == {"query": query, "duration": duration, "evaluationInterval": "60s"}
    assert registered.inputs["documentation"]["mimeType"] == "text/markdown"
    assert registered.inputs["documentation"]["content"].startswith(doc)


def test_promql_policies_wait_for_the_log_metrics_they_query(declared):
    metrics = {r.urn for r in declared.of_type(METRIC)}
    channel = declared.one(CHANNEL).urn
    for name in ("api-5xx-ratio", "api-p95-latency", "job-failure-rate", "oldest-queued-job"):
        assert policy(declared, name).dependencies == {*metrics, channel}, name


def test_the_uptime_policy_is_critical_and_reads_the_checks_result(declared):
    registered = policy(declared, "uptime-failing")
    uptime = declared.one(UPTIME)
    check = uptime.outputs["uptimeCheckId"]
    assert registered.inputs["displayName"] == "liftoff-prod: API uptime check failing"
    assert registered.inputs["severity"] == "CRITICAL"
    assert "documentation" not in registered.inputs
    (condition,) = registered.inputs["conditions"]
    assert condition == {
        "displayName": "/health failing",
        "conditionThreshold": {
            "filter": 'metric.type="monitoring.googleapis.com/uptime_check/check_passed"'
            f' AND resource.type="uptime_url" AND metric.label.check_id="{check}"',
            "comparison": "COMPARISON_GT",
            "thresholdValue": 1,
            "duration": "300s",
            "aggregations": [
                {
                    "alignmentPeriod": "300s",
                    "perSeriesAligner": "ALIGN_NEXT_OLDER",
                    "crossSeriesReducer": "REDUCE_COUNT_FALSE",
                    "groupByFields": ["resource.label.*"],
                }
            ],
        },
    }
    assert registered.dependencies == {declared.one(CHANNEL).urn, uptime.urn}


def test_thresholds_and_the_service_come_from_the_args(declare):
    args = monitoring_args(
        region="us-east1",
        prefix="liftoff-staging",
        api_service_name="liftoff-staging-api",
        worker_pool_name="liftoff-staging-worker",
        error_ratio=0.2,
        p95_latency_ms=750,
        job_failure_ratio=0.25,
        oldest_queued_seconds=90,
        labels={},
    )
    declared = declare(lambda: {"channel": Monitoring("watch", args).channel})
    assert declared.child_names(TYPE) >= {"watch-email", "watch-api-5xx-ratio", "watch-queue-age"}
    queries = {
        r.name: promql(r)["query"] for r in declared.of_type(POLICY) if r.name != "watch-uptime-failing"
    }
    assert queries["watch-api-5xx-ratio"].endswith("[5m])) > 0.2")
    assert 'location="us-east1",service_name="liftoff-staging-api"' in queries["watch-api-5xx-ratio"]
    assert 'location="us-east1",service_name="liftoff-staging-api"' in queries["watch-api-p95-latency"]
    for worker_alert in ("watch-job-failure-rate", "watch-oldest-queued-job"):
        assert 'location="us-east1",worker_pool_name="liftoff-staging-worker"' in queries[worker_alert]
    for metric in declared.of_type(METRIC):
        assert 'resource.labels.worker_pool_name="liftoff-staging-worker"' in metric.inputs["filter"]
        assert 'resource.labels.location="us-east1"' in metric.inputs["filter"]
    assert declared.one(INVOKER).inputs["location"] == "us-east1"
    assert queries["watch-api-p95-latency"].endswith(" > 750")
    assert "user_liftoff_staging_job_outcomes" in queries["watch-job-failure-rate"]
    assert queries["watch-job-failure-rate"].endswith(" > 0.25")
    assert "user_liftoff_staging_queue_oldest_age_bucket" in queries["watch-oldest-queued-job"]
    assert queries["watch-oldest-queued-job"].endswith(" > 90")
    assert declared.one(METRIC, "watch-job-outcomes").inputs["name"] == "liftoff-staging-job-outcomes"
    assert all("userLabels" not in r.inputs or r.inputs["userLabels"] == {} for r in declared.children(TYPE))
    doc = declared.one(POLICY, "watch-job-failure-rate").inputs["documentation"]["content"]
    assert doc.startswith("More than 25% of job attempts fail.")


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"notification_email": "not-an-address"}, "notification_email"),
        ({"notification_email": "two@at@example.com"}, "notification_email"),
        pytest.param({"error_ratio": 0}, "error_ratio"),
        pytest.param({"error_ratio": 1.5}, "error_ratio"),
        pytest.param({"job_failure_ratio": 1}, "job_failure_ratio"),
        pytest.param({"p95_latency_ms": 0}, "p95_latency_ms"),
        pytest.param({"oldest_queued_seconds": -1}, "oldest_queued_seconds"),
    ],
)
def test_bad_args_name_the_field(overrides, field):
    with pytest.raises(ValueError, match=field):
        monitoring_args(**overrides)
