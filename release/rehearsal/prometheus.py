"""The gates' windows read from each API revision's own Prometheus `/metrics`.

A background thread scrapes every revision twice a second; a window [start, end] is the
difference between the last snapshot taken at or before `start` and the first taken at or
after `end`, as PromQL's `increase()` over a range reads a counter. The probes (`/health`,
`/ready`, `/metrics`, this reader's own scrapes included) are left out: they are not traffic.
"""

from __future__ import annotations

import math
import threading
import time
from bisect import bisect_right
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import httpx
from prometheus_client.parser import text_string_to_metric_families

from app.core.middleware import PROBES
from release.gates import Window

SCRAPE_SECONDS = 0.5
SCRAPE_TIMEOUT = 2.0
REQUESTS = "http_requests_total"
BUCKETS = "http_request_duration_seconds_bucket"


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A revision's counters at one instant: requests, 5xx, and cumulative latency buckets."""

    at: float
    requests: int
    errors: int
    # (upper bound in seconds, cumulative count), ascending, +Inf last
    buckets: tuple[tuple[float, float], ...]

    @classmethod
    def parse(cls, text: str, at: float) -> Snapshot:
        requests = errors = 0
        buckets: dict[float, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.labels.get("route") in PROBES:
                    continue
                if sample.name == REQUESTS:
                    requests += int(sample.value)
                    errors += int(sample.value) if sample.labels["status"].startswith("5") else 0
                elif sample.name == BUCKETS:
                    bound = float(sample.labels["le"])
                    buckets[bound] = buckets.get(bound, 0.0) + sample.value
        return cls(at, requests, errors, tuple(sorted(buckets.items())))

    def since(self, earlier: Snapshot | None) -> tuple[int, int, list[tuple[float, float]]]:
        """Requests, 5xx and cumulative buckets between `earlier` and this snapshot.

        A counter that went down means the process restarted from zero: as PromQL's increase()
        does, the new value is then the whole increase.
        """
        if earlier is None or self.requests < earlier.requests:
            return self.requests, self.errors, list(self.buckets)
        before = dict(earlier.buckets)
        buckets = [(bound, count - before.get(bound, 0.0)) for bound, count in self.buckets]
        return self.requests - earlier.requests, self.errors - earlier.errors, buckets


def histogram_quantile(q: float, buckets: Iterable[tuple[float, float]]) -> float | None:
    """The q-quantile of cumulative buckets, interpolated linearly inside its bucket, as PromQL does.

    Ported from Prometheus's bucketQuantile (https://github.com/prometheus/prometheus/blob/main/promql/quantile.go;
    https://prometheus.io/docs/prometheus/latest/querying/functions/#histogram_quantile): the first
    bucket starts at 0, a quantile in the +Inf bucket is the highest finite bound. None when empty.
    """
    ordered = sorted(buckets)
    if len(ordered) < 2 or not math.isinf(ordered[-1][0]):
        return None
    total = ordered[-1][1]
    if total <= 0:
        return None
    rank = q * total
    index = next(i for i, (_, count) in enumerate(ordered) if count >= rank)
    if index == len(ordered) - 1:
        return ordered[-2][0]
    if index == 0 and ordered[0][0] <= 0:
        return ordered[0][0]
    start, below = (0.0, 0.0) if index == 0 else ordered[index - 1]
    end, count = ordered[index]
    return start + (end - start) * (rank - below) / (count - below)


@dataclass
class _Series:
    url: str
    snapshots: list[Snapshot] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Reading:
    """One window the controller asked for, and what it got."""

    revision: str
    start: float
    end: float
    window: Window


class PrometheusMetrics:
    """The Metrics port over each revision's `/metrics`, scraped in the background."""

    # A window ends with a scrape taken when it is asked for: nothing arrives late.
    delay_seconds = 0.0

    def __init__(self, interval: float = SCRAPE_SECONDS) -> None:
        self.interval = interval
        self.readings: list[Reading] = []
        self._series: dict[str, _Series] = {}
        self._lock = threading.Lock()
        # One scrape at a time: the background thread's and a window's own share one client.
        self._scraping = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="prometheus", daemon=True)
        self._http = httpx.Client(timeout=SCRAPE_TIMEOUT)

    def watch(self, revision: str, url: str) -> None:
        """Scrape `revision` at `url` from now on; its first snapshot is taken before this returns."""
        with self._lock:
            self._series[revision] = _Series(url)
        self._scrape(revision)

    def start(self) -> PrometheusMetrics:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(SCRAPE_TIMEOUT * 2)
        self._http.close()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            for revision in list(self._series):
                self._scrape(revision)

    def _scrape(self, revision: str) -> None:
        series = self._series[revision]
        with self._scraping:
            try:
                response = self._http.get(f"{series.url}/metrics")
                response.raise_for_status()
            except httpx.HTTPError:
                return  # a revision that is down has no new snapshot; its windows end at the last one
            snapshot = Snapshot.parse(response.text, time.time())
        with self._lock:
            series.snapshots.append(snapshot)

    def window(self, revision: str, start: float, end: float) -> Window:
        """What `revision` served between `start` and `end` (seconds since the epoch)."""
        if revision not in self._series:
            raise KeyError(f"no metrics for revision {revision!r}: it was never shipped here")
        if not self._snapshots(revision) or self._snapshots(revision)[-1].at < end:
            self._scrape(revision)
        snapshots = self._snapshots(revision)
        times = [s.at for s in snapshots]
        before = snapshots[bisect_right(times, start) - 1] if times and times[0] <= start else None
        after_index = min(bisect_right(times, end - 1e-9), len(snapshots) - 1)
        after = snapshots[after_index] if snapshots else None
        if after is None:
            window = Window(0, 0, None)
        else:
            requests, errors, buckets = after.since(before)
            p95 = histogram_quantile(0.95, buckets)
            window = Window(requests, errors, None if p95 is None else p95 * 1000)
        self.readings.append(Reading(revision, start, end, window))
        return window

    def _snapshots(self, revision: str) -> list[Snapshot]:
        with self._lock:
            return list(self._series[revision].snapshots)

    def urls(self) -> Mapping[str, str]:
        return {name: series.url for name, series in self._series.items()}
