"""Gate windows read from a double of Cloud Monitoring's timeSeries.list.

The double checks each request as the API does (filter syntax, metric and resource types, label
names, interval, alignment period, aligner and reducer names and what each is valid for) and
answers 400 INVALID_ARGUMENT otherwise; it aggregates raw requests the way the request describes.
References: https://cloud.google.com/monitoring/api/ref_v3/rest/v3/projects.timeSeries/list,
https://cloud.google.com/monitoring/api/v3/filters,
https://cloud.google.com/monitoring/api/metrics_gcp_p_z#gcp-run.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest

from components.rest import ApiError, RestClient
from release.cloud import CloudMonitoringMetrics, Site
from release.gates import Window
from stacks.settings import WorkloadNames
from tests.http_double import Reply, Request, google_error

pytestmark = pytest.mark.unit

SITE = Site("liftoff-prod-000000", "europe-west1", WorkloadNames.of("prod"))
T0 = 1_790_000_000.0
# Metric kind and value type of each metric (metrics_gcp_p_z#gcp-run).
METRICS = {
    "run.googleapis.com/request_count": ("DELTA", "INT64"),
    "run.googleapis.com/request_latencies": ("DELTA", "DISTRIBUTION"),
}
RESOURCE_LABELS = {"project_id", "service_name", "revision_name", "location", "configuration_name"}
METRIC_LABELS = {"response_code", "response_code_class", "route"}
ALIGNERS = {
    "ALIGN_NONE", "ALIGN_DELTA", "ALIGN_RATE", "ALIGN_INTERPOLATE", "ALIGN_NEXT_OLDER", "ALIGN_MIN",
    "ALIGN_MAX", "ALIGN_MEAN", "ALIGN_COUNT", "ALIGN_SUM", "ALIGN_STDDEV", "ALIGN_COUNT_TRUE",
    "ALIGN_COUNT_FALSE", "ALIGN_FRACTION_TRUE", "ALIGN_PERCENTILE_99", "ALIGN_PERCENTILE_95",
    "ALIGN_PERCENTILE_50", "ALIGN_PERCENTILE_05", "ALIGN_PERCENT_CHANGE",
}  # fmt: skip
REDUCERS = {
    "REDUCE_NONE", "REDUCE_MEAN", "REDUCE_MIN", "REDUCE_MAX", "REDUCE_SUM", "REDUCE_STDDEV",
    "REDUCE_COUNT", "REDUCE_COUNT_TRUE", "REDUCE_COUNT_FALSE", "REDUCE_FRACTION_TRUE",
    "REDUCE_PERCENTILE_99", "REDUCE_PERCENTILE_95", "REDUCE_PERCENTILE_50", "REDUCE_PERCENTILE_05",
}  # fmt: skip
# What the double implements, with the value types each is documented as valid for.
IMPLEMENTED_REDUCERS = {
    "REDUCE_SUM": {"INT64", "DOUBLE", "DISTRIBUTION"},
    "REDUCE_PERCENTILE_95": {"INT64", "DOUBLE", "DISTRIBUTION"},
}
TERM = re.compile(r'^([a-z_.]+) = "([^"\\]*)"$')


@dataclass(frozen=True)
class Served:
    """One request a revision served."""

    service: str
    revision: str
    code_class: str
    latency_ms: float
    at: float


class BadRequest(Exception):
    pass


def parse_filter(text: str) -> dict[str, str]:
    terms: dict[str, str] = {}
    for term in text.split(" AND "):
        match = TERM.match(term)
        if not match:
            raise BadRequest(f"could not parse filter term {term!r}")
        key, value = match.groups()
        if key.startswith("resource.labels.") and key.removeprefix("resource.labels.") not in RESOURCE_LABELS:
            raise BadRequest(f"unknown resource label {key}")
        if key.startswith("metric.labels.") and key.removeprefix("metric.labels.") not in METRIC_LABELS:
            raise BadRequest(f"unknown metric label {key}")
        if not key.startswith(("resource.labels.", "metric.labels.")) and key not in (
            "metric.type",
            "resource.type",
        ):
            raise BadRequest(f"unknown filter field {key}")
        terms[key] = value
    if terms.get("metric.type") not in METRICS:
        raise BadRequest("the filter must name one metric type")
    if terms.get("resource.type", "cloud_run_revision") != "cloud_run_revision":
        raise BadRequest("these metrics are written for the cloud_run_revision resource")
    return terms


def when(request: Request, name: str) -> float:
    raw = request.param(name)
    if raw is None or not raw.endswith("Z"):
        raise BadRequest(f"{name}: an RFC 3339 UTC time is required")
    return datetime.fromisoformat(raw).timestamp()


def aggregation(request: Request, value_type: str) -> tuple[float, str, str]:
    period = request.param("aggregation.alignmentPeriod") or ""
    if not re.fullmatch(r"\d+(\.\d+)?s", period) or float(period[:-1]) < 60:
        raise BadRequest(f"aggregation.alignmentPeriod: {period!r} must be a duration of at least 60s")
    aligner = request.param("aggregation.perSeriesAligner") or ""
    reducer = request.param("aggregation.crossSeriesReducer") or ""
    if aligner not in ALIGNERS or reducer not in REDUCERS:
        raise BadRequest(f"unknown aligner {aligner!r} or reducer {reducer!r}")
    if aligner != "ALIGN_DELTA":
        raise BadRequest(f"the double implements ALIGN_DELTA only, got {aligner}")
    if value_type not in IMPLEMENTED_REDUCERS.get(reducer, set()):
        raise BadRequest(f"{reducer} is not valid for {value_type} metrics (or not implemented here)")
    group_by = request.query.get("aggregation.groupByFields", [])
    for field in group_by:
        label = field.removeprefix("metric.labels.").removeprefix("resource.labels.")
        if label not in METRIC_LABELS | RESOURCE_LABELS or label == field:
            raise BadRequest(f"aggregation.groupByFields: unknown label {field}")
    return float(period[:-1]), reducer, ",".join(group_by)


def percentile_95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


class Monitoring:
    """timeSeries.list over a list of served requests, one series per page."""

    def __init__(self, served: list[Served]) -> None:
        self.served = served
        self.execution_errors: list[dict[str, Any]] = []

    def __call__(self, request: Request) -> Reply:
        if request.path != f"/v3/projects/{SITE.project}/timeSeries":
            return google_error(404, "NOT_FOUND", request.path)
        try:
            series = self.series(request)
        except BadRequest as error:
            return google_error(400, "INVALID_ARGUMENT", str(error))
        page = int(request.param("pageToken") or 0)
        body: dict[str, Any] = {"timeSeries": series[page : page + 1]} if series else {}
        if page + 1 < len(series):
            body["nextPageToken"] = str(page + 1)
        if self.execution_errors:
            body["executionErrors"] = self.execution_errors
        return Reply(200, body)

    def series(self, request: Request) -> list[dict[str, Any]]:
        terms = parse_filter(request.param("filter") or "")
        kind, value_type = METRICS[terms["metric.type"]]
        start, end = when(request, "interval.startTime"), when(request, "interval.endTime")
        if start >= end:
            raise BadRequest("for DELTA metrics the interval's start must be before its end")
        period, reducer, group_by = aggregation(request, value_type)
        labels = {
            "service_name": lambda s: s.service,
            "revision_name": lambda s: s.revision,
            "response_code_class": lambda s: s.code_class,
        }
        chosen = [
            s
            for s in self.served
            if start < s.at <= end
            and all(labels[k.split(".")[-1]](s) == v for k, v in terms.items() if k.split(".")[-1] in labels)
            and terms.get("resource.labels.location", SITE.region) == SITE.region
        ]
        groups: dict[str, list[Served]] = {}
        for s in chosen:
            groups.setdefault(labels[group_by.split(".")[-1]](s), []).append(s)
        return [
            self.one(terms["metric.type"], kind, group_by, key, items, reducer, end, period)
            for key, items in groups.items()
        ]

    def one(self, metric, kind, group_by, key, items, reducer, end, period) -> dict[str, Any]:
        if reducer == "REDUCE_SUM" and metric.endswith("request_count"):
            value: dict[str, Any] = {"int64Value": str(len(items))}  # int64 is a JSON string
            value_type = "INT64"
        else:
            value = {"doubleValue": percentile_95([s.latency_ms for s in items])}
            value_type = "DOUBLE"
        where = "metric" if group_by.startswith("metric.") else "resource"
        label = {group_by.split(".")[-1]: key}
        return {
            "metric": {"type": metric, "labels": label if where == "metric" else {}},
            "resource": {
                "type": "cloud_run_revision",
                "labels": {"project_id": SITE.project, **(label if where == "resource" else {})},
            },
            "metricKind": kind,
            "valueType": value_type,
            "points": [{"interval": {"startTime": "s", "endTime": "e"}, "value": value}],
        }


def traffic(
    revision: str, at: float, latencies: list[float], five_xx: int, service: str = "liftoff-prod-api"
):
    """Requests at time `at`, the last `five_xx` of them answered 5xx."""
    ok = len(latencies) - five_xx
    return [Served(service, revision, "2xx" if i < ok else "5xx", ms, at) for i, ms in enumerate(latencies)]


def metrics(url: str) -> CloudMonitoringMetrics:
    return CloudMonitoringMetrics(RestClient(url, lambda: "token", attempts=1), SITE)


def test_a_window_counts_requests_errors_and_the_p95(serve):
    served = [
        *traffic("liftoff-prod-api-b", T0 + 100, [float(ms) for ms in range(1, 201)], five_xx=10),
        *traffic("liftoff-prod-api-b", T0 - 50, [5000.0] * 30, five_xx=30),  # before the window
        *traffic("liftoff-prod-api-a", T0 + 100, [9000.0] * 500, five_xx=500),  # the stable revision
        *traffic("liftoff-prod-api-b", T0 + 100, [9000.0] * 50, five_xx=50, service="other-api"),
    ]
    double = serve(Monitoring(served))
    assert metrics(double.url).window("liftoff-prod-api-b", T0, T0 + 300) == Window(200, 10, 190.0)
    count, *rest = [r for r in double.requests if "request_count" in (r.param("filter") or "")]
    assert count.param("filter") == (
        'metric.type = "run.googleapis.com/request_count" AND resource.type = "cloud_run_revision"'
        ' AND resource.labels.location = "europe-west1" AND resource.labels.service_name = "liftoff-prod-api"'
        ' AND resource.labels.revision_name = "liftoff-prod-api-b"'
    )
    assert count.param("aggregation.alignmentPeriod") == "300s"
    assert len(rest) == 1, "two response classes, one series per page: the second page was read"


def test_no_requests_is_an_empty_window_and_no_latency_query(serve):
    double = serve(Monitoring([]))
    assert metrics(double.url).window("liftoff-prod-api-b", T0, T0 + 300) == Window(0, 0, None)
    assert all("request_count" in (r.param("filter") or "") for r in double.requests)


def test_a_short_window_still_aligns_on_at_least_a_minute(serve):
    double = serve(Monitoring(traffic("liftoff-prod-api-b", T0 + 10, [30.0] * 4, five_xx=1)))
    assert metrics(double.url).window("liftoff-prod-api-b", T0, T0 + 20) == Window(4, 1, 30.0)
    assert {r.param("aggregation.alignmentPeriod") for r in double.requests} == {"60s"}


def test_a_partial_answer_is_an_error_not_a_quiet_revision(serve):
    monitoring = Monitoring(traffic("liftoff-prod-api-b", T0 + 10, [30.0] * 4, five_xx=0))
    monitoring.execution_errors = [{"code": 4, "message": "deadline exceeded"}]
    double = serve(monitoring)
    with pytest.raises(ApiError, match="deadline exceeded"):
        metrics(double.url).window("liftoff-prod-api-b", T0, T0 + 300)


def test_a_refused_query_is_an_error(serve):
    double = serve(lambda request: google_error(400, "INVALID_ARGUMENT", "Field filter had an invalid value"))
    with pytest.raises(ApiError, match="400"):
        metrics(double.url).window("liftoff-prod-api-b", T0, T0 + 300)


@pytest.mark.parametrize("revision", ['x" OR metric.type = "y', "", "Upper-case"])
def test_only_revision_names_reach_the_filter(serve, revision):
    double = serve(Monitoring([]))
    with pytest.raises(ValueError, match="not a Cloud Run revision name"):
        metrics(double.url).window(revision, T0, T0 + 300)
    assert double.requests == []


def test_a_window_must_end_after_it_starts():
    with pytest.raises(ValueError, match="ends after it starts"):
        metrics("http://127.0.0.1:9").window("liftoff-prod-api-b", T0, T0)
