"""Windows read from a revision's own /metrics: requests, 5xx and p95, as PromQL would read them."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Iterator

import httpx
import pytest

from release.gates import Window
from release.rehearsal.prometheus import PrometheusMetrics, Snapshot, histogram_quantile
from release.rehearsal.system import LocalSystem
from tests.release.rehearsal.conftest import Revisions

pytestmark = pytest.mark.integration
INF = math.inf


@pytest.mark.unit
@pytest.mark.parametrize(
    ("q", "buckets", "expected"),
    [
        # Half the observations at or below 0.1 s: the median is the bucket's upper bound.
        (0.5, [(0.1, 50), (0.2, 100), (INF, 100)], 0.1),
        # Interpolated linearly inside the bucket that holds the rank.
        (0.75, [(0.1, 50), (0.2, 100), (INF, 100)], 0.15),
        (0.95, [(0.25, 0), (0.5, 40), (INF, 40)], 0.25 + 0.25 * 38 / 40),
        # The first bucket starts at 0.
        (0.5, [(0.1, 10), (INF, 10)], 0.05),
        # A rank in the +Inf bucket is the highest finite bound.
        (0.95, [(0.1, 90), (1.0, 90), (INF, 100)], 1.0),
    ],
)
def test_histogram_quantile_interpolates_as_promql(q, buckets, expected):
    assert histogram_quantile(q, buckets) == pytest.approx(expected)


@pytest.mark.unit
@pytest.mark.parametrize("buckets", [[], [(INF, 0)], [(0.1, 0), (INF, 0)], [(0.1, 3), (1.0, 5)]])
def test_no_quantile_without_observations_or_an_inf_bucket(buckets):
    assert histogram_quantile(0.95, buckets) is None


@pytest.mark.unit
def test_a_counter_that_went_down_is_a_restart_counted_from_zero():
    before = Snapshot(0.0, 100, 5, ((0.1, 100.0), (INF, 100.0)))
    after = Snapshot(1.0, 7, 1, ((0.1, 7.0), (INF, 7.0)))
    assert after.since(before) == (7, 1, [(0.1, 7.0), (INF, 7.0)])
    assert after.since(None) == (7, 1, [(0.1, 7.0), (INF, 7.0)])


@pytest.fixture
def metrics() -> Iterator[PrometheusMetrics]:
    reader = PrometheusMetrics().start()
    try:
        yield reader
    finally:
        reader.stop()


async def _send(url: str, token: str, count: int, path: str = "/v1/generations") -> list[int]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=10) as http:
        responses = await asyncio.gather(*(http.get(path) for _ in range(count)))
    return [r.status_code for r in responses]


def test_a_window_counts_what_the_revision_served_between_two_instants(
    metrics, revisions: Revisions, system: LocalSystem
):
    api = revisions.blue
    metrics.watch(api.name, api.url)
    start = time.time()
    assert set(asyncio.run(_send(api.url, system.token(), 20))) == {200}
    assert set(asyncio.run(_send(api.url, "", 5))) == {401}
    for probe in ("/health", "/ready", "/metrics"):
        asyncio.run(_send(api.url, "", 3, probe))  # probes are not traffic
    end = time.time()
    window = metrics.window(api.name, start, end)
    assert (window.requests, window.errors) == (25, 0)
    assert window.p95_ms is not None
    assert window.p95_ms > 0
    time.sleep(1.2)  # the background scraper runs on; nothing was served
    assert metrics.window(api.name, end + 0.1, time.time()) == Window(0, 0, None)
    assert len(metrics.readings) == 2


def test_5xx_and_latency_of_a_faulty_revision(metrics, revisions: Revisions, system: LocalSystem):
    api = revisions.faulty
    metrics.watch(api.name, api.url)
    start = time.time()
    statuses = asyncio.run(_send(api.url, system.token(), 40))
    end = time.time()
    window = metrics.window(api.name, start, end)
    assert statuses.count(500) == 10
    assert (window.requests, window.errors) == (40, 10)
    # Every request took 300 ms more: the p95 lies past the 250 ms bucket boundary.
    assert window.p95_ms is not None
    assert window.p95_ms > 250


def test_an_unknown_revision_is_an_error(metrics):
    with pytest.raises(KeyError, match="never shipped"):
        metrics.window("liftoff-local-api-nope", 0.0, 1.0)
