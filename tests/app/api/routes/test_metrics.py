"""Prometheus metrics: requests by route and status, latency, and jobs by status."""

from __future__ import annotations

import uuid

import pytest
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.integration


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_metrics_count_requests_by_route_template_and_status(client, auth_a):
    job = (await client.post("/v1/generations", json={"prompt": "x"}, headers=auth_a)).json()
    await client.get(f"/v1/generations/{job['id']}", headers=auth_a)
    await client.get(f"/v1/generations/{uuid.uuid4()}", headers=auth_a)
    await client.get("/nope")
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    data = samples(response.text)

    def count(method: str, route: str, status: str) -> float:
        labels = frozenset({"method": method, "route": route, "status": status}.items())
        return data.get(("http_requests_total", labels), 0.0)

    assert count("POST", "/v1/generations", "202") == 1
    assert count("GET", "/v1/generations/{job_id}", "200") == 1
    assert count("GET", "/v1/generations/{job_id}", "404") == 1
    assert count("GET", "unmatched", "404") == 1
    # Raw ids never become label values.
    assert job["id"] not in response.text
    latency = frozenset({"method": "POST", "route": "/v1/generations", "status": "202"}.items())
    assert data[("http_request_duration_seconds_count", latency)] == 1


async def test_metrics_report_jobs_by_status(client, auth_a):
    for _ in range(3):
        await client.post("/v1/generations", json={"prompt": "x"}, headers=auth_a)
    job = (await client.post("/v1/generations", json={"prompt": "x"}, headers=auth_a)).json()
    await client.post(f"/v1/generations/{job['id']}/cancel", headers=auth_a)
    data = samples((await client.get("/metrics")).text)
    assert data[("liftoff_jobs", frozenset({("status", "queued")}))] == 3
    assert data[("liftoff_jobs", frozenset({("status", "cancelled")}))] == 1
    assert data[("liftoff_jobs", frozenset({("status", "failed")}))] == 0


async def test_refused_bodies_are_counted_under_their_route(client, auth_a):
    await client.post("/v1/generations", content=b"x" * (70 * 1024), headers=auth_a)
    data = samples((await client.get("/metrics")).text)
    labels = frozenset({"method": "POST", "route": "/v1/generations", "status": "413"}.items())
    assert data[("http_requests_total", labels)] == 1
