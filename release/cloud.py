"""The release controller's ports on Google Cloud: what serves, what it served, and its smoke test.

`CloudRunLive` reads the serving revisions from the Cloud Run Admin API, `CloudMonitoringMetrics`
reads a revision's requests, 5xx and p95 latency from Cloud Monitoring, `HttpSmoke` calls the
candidate's `/ready` on its tag URL. The `pulumi up`s go through release/automation.py;
`cloud_ports` wires all of them for one stack.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pulumi

from components.googleapi import GoogleToken
from components.rest import ApiError, NotFoundError, RestClient
from components.traffic import REVISION_PATTERN
from release.automation import ROOT, AutomationDeployer
from release.compat.port import LocalSchemaGate
from release.gates import Window
from release.ports import JobMetrics, Live, SchemaGate, Synthetic
from release.probes import HttpSynthetic, PostgresJobs, UnreadableJobs
from stacks.ledger import Ledger, Release
from stacks.release_plan import CANDIDATE_TAG
from stacks.settings import StackSettings, WorkloadNames, load
from tools.render import secret_keys, stack_config

RUN_API = "https://run.googleapis.com"
MONITORING_API = "https://monitoring.googleapis.com"
LEDGER_OUTPUT = "release_ledger"
# The allocation types whose status names no revision of its own: "the latest ready revision".
# https://cloud.google.com/run/docs/reference/rest/v2/projects.locations.services#traffictargetallocationtype
# https://cloud.google.com/run/docs/reference/rest/v2/projects.locations.workerPools#instancesplitallocationtype
LATEST_TYPES = frozenset({"TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST", "INSTANCE_SPLIT_ALLOCATION_TYPE_LATEST"})
ID_TOKEN_ENV = "LIFTOFF_ID_TOKEN"  # noqa: S105 (the variable's name, not a token)


@dataclass(frozen=True, slots=True)
class Site:
    """Where one stack's workloads run, and what they are called."""

    project: str
    region: str
    names: WorkloadNames

    @property
    def parent(self) -> str:
        return f"/v2/projects/{self.project}/locations/{self.region}"


@dataclass(frozen=True, slots=True)
class Tagged:
    """Where a traffic tag routes: its revision (None if Cloud Run has not resolved it) and URL."""

    revision: str | None
    url: str


def short_name(name: object) -> str:
    """A revision's own name, from either it or its resource name (projects/.../revisions/NAME)."""
    return str(name or "").rsplit("/", 1)[-1]


def tag_url(service_url: str, tag: str) -> str:
    """The URL that reaches one tag of a service: https://TAG---HOST.

    https://cloud.google.com/run/docs/rollouts-rollbacks-traffic-migration#tags
    """
    host = urlsplit(service_url).hostname
    if not host:
        raise ValueError(f"not a service URL: {service_url!r}")
    return f"https://{tag}---{host}"


def serving(resource: Mapping[str, Any] | None, statuses: str) -> dict[str, int]:
    """Revision name -> percent, from a service's trafficStatuses or a pool's instanceSplitStatuses.

    A LATEST-type status is resolved to the revision it names or, when it names none, to the
    resource's latestReadyRevision; one with nothing ready to point at serves nothing. proto3's
    JSON leaves a 0 % out (https://protobuf.dev/programming-guides/json/), and 0 % is not serving.
    """
    if not resource:
        return {}
    latest = short_name(resource.get("latestReadyRevision"))
    shares: dict[str, int] = {}
    for status in resource.get(statuses) or []:
        percent = int(status.get("percent") or 0)
        revision = short_name(status.get("revision"))
        if not revision and status.get("type") in LATEST_TYPES:
            revision = latest
        if percent > 0 and revision:
            shares[revision] = shares.get(revision, 0) + percent
    return shares


class CloudRunLive:
    """The live traffic of the API service and the worker pool, and the ledger from the stack."""

    def __init__(self, run: RestClient, site: Site, outputs: Callable[[], Mapping[str, Any]]) -> None:
        self.run = run
        self.site = site
        self.outputs = outputs

    def read(self) -> Live:
        # GET services/{name} and workerPools/{name}: https://cloud.google.com/run/docs/reference/rest/v2/
        # projects.locations.services/get, projects.locations.workerPools/get
        service = self._get("services", self.site.names.api)
        pool = self._get("workerPools", self.site.names.worker)
        return Live(
            api=serving(service, "trafficStatuses"),
            worker=serving(pool, "instanceSplitStatuses"),
            ledger=Ledger.from_json(self.outputs().get(LEDGER_OUTPUT)),
        )

    def tagged(self, tag: str) -> Tagged | None:
        """Where `tag` routes now, or None if the service or the tag is not there."""
        service = self._get("services", self.site.names.api)
        if service is None:
            return None
        for status in service.get("trafficStatuses") or []:
            if status.get("tag") != tag:
                continue
            revision = short_name(status.get("revision"))
            if not revision and status.get("type") in LATEST_TYPES:
                revision = short_name(service.get("latestReadyRevision"))
            url = status.get("uri") or tag_url(str(service.get("uri") or ""), tag)
            return Tagged(revision or None, str(url))
        return None

    def _get(self, kind: str, name: str) -> Mapping[str, Any] | None:
        """The resource, or None before the first deploy (404)."""
        try:
            body = self.run.call("GET", f"{self.site.parent}/{kind}/{name}")
        except NotFoundError:
            return None
        return body if isinstance(body, Mapping) else None


def rfc3339(seconds: float) -> str:
    """A Cloud Monitoring timestamp (RFC 3339, UTC)."""
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


class CloudMonitoringMetrics:
    """One API revision's requests, 5xx and p95 latency over a window, from Cloud Monitoring.

    The queries follow Google's cloud-run-release-manager (internal/metrics/stackdriver/
    stackdriver.go in GoogleCloudPlatform/cloud-run-release-manager): one alignment period as
    long as the window, ALIGN_DELTA per series, then REDUCE_SUM grouped by
    metric.labels.response_code_class for the 5xx share. The p95 differs: the release manager
    reduces per-series p95s with REDUCE_PERCENTILE_50, which is not a p95 of the requests; here
    the latency distributions are merged by REDUCE_PERCENTILE_95, which the API documents as
    valid for DELTA metrics of distribution type
    (https://cloud.google.com/monitoring/api/ref_v3/rest/v3/projects.timeSeries/list#reducer).
    Metrics: https://cloud.google.com/monitoring/api/metrics_gcp_p_z#gcp-run (request_count is
    DELTA INT64, request_latencies DELTA DISTRIBUTION in ms, both on cloud_run_revision).
    """

    # (metric, cross-series reducer, group-by field) of the two queries.
    REQUESTS_BY_CLASS = (
        "run.googleapis.com/request_count",
        "REDUCE_SUM",
        "metric.labels.response_code_class",
    )
    P95_LATENCY = (
        "run.googleapis.com/request_latencies",
        "REDUCE_PERCENTILE_95",
        "resource.labels.revision_name",
    )
    # An aligner's period must be at least 60 s
    # (https://cloud.google.com/monitoring/api/ref_v3/rest/v3/projects.timeSeries/list#aggregation).
    MIN_ALIGNMENT_SECONDS = 60

    # "Sampled every 60 seconds. After sampling, data is not visible for up to 180 seconds."
    # (https://cloud.google.com/monitoring/api/metrics_gcp_p_z#gcp-run, request_count).
    delay_seconds = 180.0

    def __init__(self, monitoring: RestClient, site: Site) -> None:
        self.monitoring = monitoring
        self.site = site

    def window(self, revision: str, start: float, end: float) -> Window:
        if not REVISION_PATTERN.match(revision):
            raise ValueError(f"not a Cloud Run revision name: {revision!r}")
        if end <= start:
            raise ValueError(f"a window ends after it starts, got {start} to {end}")
        counts: dict[str, int] = {}
        for series in self._series(self.REQUESTS_BY_CLASS, revision, start, end):
            code_class = str((series.get("metric") or {}).get("labels", {}).get("response_code_class", ""))
            counts[code_class] = counts.get(code_class, 0) + int(sum(_values(series)))
        requests = sum(counts.values())
        if requests == 0:
            return Window(0, 0, None)
        latencies = self._series(self.P95_LATENCY, revision, start, end)
        # One point per alignment period; a window cut into two periods is judged by its worse one.
        p95s = [value for series in latencies for value in _values(series)]
        return Window(requests, counts.get("5xx", 0), max(p95s) if p95s else None)

    def filter(self, metric: str, revision: str) -> str:
        """The monitoring filter for one revision of the API service.

        Syntax: https://cloud.google.com/monitoring/api/v3/filters (label values in double quotes).
        """
        return " AND ".join(
            f'{key} = "{value}"'
            for key, value in (
                ("metric.type", metric),
                ("resource.type", "cloud_run_revision"),
                ("resource.labels.location", self.site.region),
                ("resource.labels.service_name", self.site.names.api),
                ("resource.labels.revision_name", revision),
            )
        )

    def _series(
        self, kind: tuple[str, str, str], revision: str, start: float, end: float
    ) -> list[Mapping[str, Any]]:
        metric, reducer, group_by = kind
        period = max(self.MIN_ALIGNMENT_SECONDS, math.ceil(end - start))
        query = {
            "filter": self.filter(metric, revision),
            "interval.startTime": rfc3339(start),
            "interval.endTime": rfc3339(end),
            "aggregation.alignmentPeriod": f"{period}s",
            "aggregation.perSeriesAligner": "ALIGN_DELTA",
            "aggregation.crossSeriesReducer": reducer,
            "aggregation.groupByFields": group_by,
            "view": "FULL",
        }
        path = f"/v3/projects/{self.site.project}/timeSeries"
        found: list[Mapping[str, Any]] = []
        while True:
            page = self.monitoring.call("GET", path, params=query) or {}
            # A partial answer must not pass for a quiet revision.
            if page.get("executionErrors"):
                raise ApiError(f"GET {path}: {metric} for {revision}: {page['executionErrors']}")
            found += page.get("timeSeries") or []
            token = page.get("nextPageToken")
            if not token:
                return found
            query["pageToken"] = str(token)


def _values(series: Mapping[str, Any]) -> list[float]:
    """A series' point values: int64Value arrives as a JSON string, doubleValue as a number."""
    found = []
    for point in series.get("points") or []:
        value = point.get("value") or {}
        if "int64Value" in value:
            found.append(float(int(value["int64Value"])))
        elif "doubleValue" in value:
            found.append(float(value["doubleValue"]))
    return found


def google_id_token(audience: str) -> str:
    """A Google ID token for `audience` from Application Default Credentials.

    Works with a service account key or the metadata server; under workload identity federation
    (CI) it cannot, and the workflow passes a token in LIFTOFF_ID_TOKEN instead
    (google-github-actions/auth with token_format: id_token).
    https://google-auth.readthedocs.io/en/latest/reference/google.oauth2.id_token.html
    """
    import google.auth.transport.requests
    import google.oauth2.id_token

    request = google.auth.transport.requests.Request()
    return str(google.oauth2.id_token.fetch_id_token(request, audience))  # type: ignore[no-untyped-call]


class HttpSmoke:
    """GET /ready on the candidate's tag URL until it answers 200, for about a minute.

    A private API only answers requests bearing a Google ID token for one of its audiences; the
    service's custom audience (its name, output api_audience) is valid on every URL of it, tag
    URLs included (https://cloud.google.com/run/docs/configuring/custom-audiences).
    """

    def __init__(
        self,
        locate: Callable[[], Tagged | None],
        *,
        audience: str,
        private: bool,
        fetch_token: Callable[[str], str] = google_id_token,
        deadline_seconds: float = 60.0,
        interval_seconds: float = 5.0,
        timeout_seconds: float = 10.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.locate = locate
        self.audience = audience
        self.private = private
        self.fetch_token = fetch_token
        self.deadline_seconds = deadline_seconds
        self.interval_seconds = interval_seconds
        self.timeout_seconds = timeout_seconds
        self.sleep = sleep
        self.clock = clock

    def check(self, release: Release) -> str | None:
        # A failure to read the service (ApiError) propagates: it says nothing about the candidate,
        # and a release recorded as failed would never be routed to again.
        target = self.locate()
        if target is None:
            return f"the service has no {CANDIDATE_TAG!r} tag to smoke-test"
        if target.revision is not None and target.revision != release.api:
            # Smoke-testing some other revision would pass a release nobody tested.
            return f"the {CANDIDATE_TAG!r} tag routes to {target.revision}, not to {release.api}"
        try:
            headers = self.headers()
        except Exception as error:  # noqa: BLE001 - any credential failure is a failed smoke test
            cause = f"{type(error).__name__}: {error}"
            return f"no identity token for audience {self.audience!r} ({cause}); set {ID_TOKEN_ENV}"
        return self.poll(f"{target.url.rstrip('/')}/ready", headers)

    def headers(self) -> dict[str, str]:
        if not self.private:
            return {}
        token = os.environ.get(ID_TOKEN_ENV) or self.fetch_token(self.audience)
        return {"Authorization": f"Bearer {token}"}

    def poll(self, url: str, headers: Mapping[str, str]) -> str | None:
        """None once `url` answers 200; else the last failure, once the deadline has passed.

        Every failure is retried: a new revision's tag takes a moment to route (404, 503), and
        so does a cold start.
        """
        deadline = self.clock() + self.deadline_seconds
        attempts = 0
        with httpx.Client(timeout=self.timeout_seconds, follow_redirects=False) as http:
            while True:
                attempts += 1
                try:
                    response = http.get(url, headers=dict(headers))
                except httpx.HTTPError as error:
                    failure = f"{type(error).__name__}: {error}"
                else:
                    if response.status_code == 200:
                        return None
                    failure = f"{response.status_code} {response.text[:300]}"
                if self.clock() + self.interval_seconds > deadline:
                    waited = f"{attempts} attempts over {self.deadline_seconds:.0f} s"
                    return f"GET {url}: {failure} (after {waited})"
                self.sleep(self.interval_seconds)


class StackFile:
    """A stack's settings as its committed stack file declares them, secrets left encrypted.

    An encrypted key only counts as present: the settings check that secrets exist, and the
    release reads no secret value.
    """

    def __init__(self, stack: str, root: Path = ROOT) -> None:
        name = stack.rsplit("/", 1)[-1]
        self.config = stack_config(name, root)
        self.secrets = frozenset(secret_keys(name, root))

    def get(self, namespace: str, key: str) -> Any:
        return self.config.get(f"{namespace}:{key}")

    def get_secret(self, namespace: str, key: str) -> pulumi.Output[str] | None:
        if f"{namespace}:{key}" not in self.secrets:
            return None
        return pulumi.Output.secret("[encrypted in the stack file]")


def stack_settings(stack: str, root: Path = ROOT) -> StackSettings:
    """The stack's validated settings from Pulumi.<stack>.yaml; ConfigError names every problem.

    Read on an event loop of its own, run until the secret markers' outputs have resolved: outside
    a Pulumi program there is no engine loop, and nothing may be left pending.
    """
    loop = asyncio.new_event_loop()
    try:
        asyncio.set_event_loop(loop)
        settings = load(StackFile(stack, root), stack=stack.rsplit("/", 1)[-1])
        loop.run_until_complete(asyncio.gather(*asyncio.all_tasks(loop)))
        return settings
    finally:
        asyncio.set_event_loop(None)
        loop.close()


# The worker's gates read the attempts from the stack's database, and the schema gate its
# revision: a DSN of a member of liftoff_release_reader (migration 0007; docs/deploy.md, "The
# worker is judged on its jobs"), passed by the release job.
JOBS_DSN_ENV = "LIFTOFF_JOBS_DATABASE_URL"
# A JWT of the probe tenant (app/core/probes.py) for the synthetic traffic; without it a stack's
# declared probes are not sent, and a quiet step is inconclusive as if none were declared.
PROBE_TOKEN_ENV = "LIFTOFF_PROBE_TOKEN"  # noqa: S105 (the variable's name, not a token)


@dataclass(frozen=True)
class CloudPorts:
    """Every port of one stack's release on Google Cloud, and the settings they were built from."""

    settings: StackSettings
    live: CloudRunLive
    deployer: AutomationDeployer
    metrics: CloudMonitoringMetrics
    smoke: HttpSmoke
    clients: tuple[RestClient, ...]
    jobs: JobMetrics
    synthetic: Synthetic | None
    schema: SchemaGate

    def close(self) -> None:
        for client in self.clients:
            client.http.close()


def cloud_ports(
    stack: str,
    *,
    root: Path = ROOT,
    settings: StackSettings | None = None,
    token: Callable[[], str] | None = None,
    run_api: str = RUN_API,
    monitoring_api: str = MONITORING_API,
    on_output: Callable[[str], Any] = print,
) -> CloudPorts:
    """The ports for `stack`, from its stack file (or the settings given)."""
    settings = settings or stack_settings(stack, root)
    site = Site(settings.project, settings.region, settings.names)
    token = token or GoogleToken()
    run = RestClient(run_api, token)
    monitoring = RestClient(monitoring_api, token)
    deployer = AutomationDeployer(stack, root, on_output=on_output)
    live = CloudRunLive(run, site, lambda: {LEDGER_OUTPUT: deployer.ledger()})
    smoke = HttpSmoke(
        lambda: live.tagged(CANDIDATE_TAG),
        audience=settings.api_service_name,
        private=not settings.api.public,
    )
    metrics = CloudMonitoringMetrics(monitoring, site)
    jobs_dsn = os.environ.get(JOBS_DSN_ENV)
    jobs: JobMetrics = PostgresJobs(jobs_dsn) if jobs_dsn else UnreadableJobs(f"{JOBS_DSN_ENV} is not set")
    # The gate runs the rollback targets' code here, on local servers, against this checkout's
    # migrations; the stack's database (the same read DSN) says which contract ones are pending.
    schema = LocalSchemaGate(root=root, dsn=jobs_dsn)
    return CloudPorts(
        settings,
        live,
        deployer,
        metrics,
        smoke,
        (run, monitoring),
        jobs,
        _synthetic(live, smoke, settings),
        schema,
    )


def _synthetic(live: CloudRunLive, smoke: HttpSmoke, settings: StackSettings) -> Synthetic | None:
    """Probes to the candidate tag's URL, with the service's identity token and the probe tenant's."""
    declared = settings.release.synthetic
    probe_token = os.environ.get(PROBE_TOKEN_ENV)
    if not declared.enabled or not probe_token:
        return None

    def url_for(release: Release) -> str:
        target = live.tagged(CANDIDATE_TAG)
        if target is None:
            raise RuntimeError(f"the service has no {CANDIDATE_TAG!r} tag to probe")
        return target.url

    def headers() -> dict[str, str]:
        # The app reads the tenant's JWT from Authorization, so a private API's identity token
        # goes in X-Serverless-Authorization, which Cloud Run checks and strips
        # (https://cloud.google.com/run/docs/authenticating/service-to-service).
        found = {"Authorization": f"Bearer {probe_token}"}
        identity = smoke.headers().get("Authorization")
        if identity:
            found["X-Serverless-Authorization"] = identity
        return found

    return HttpSynthetic(url_for=url_for, headers=headers, rate=declared.rate)
