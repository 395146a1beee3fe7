"""Rehearsal faults: FAULT_ERROR_RATIO, FAULT_DELAY_MS and the worker's FAULT_JOB_*, refused outside
local and test."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError

from app.main import create_app
from app.settings import Settings

pytestmark = pytest.mark.integration


@pytest.mark.unit
@pytest.mark.parametrize("env", ["staging", "prod"])
@pytest.mark.parametrize(
    "fault",
    [
        {"fault_error_ratio": 0.1},
        {"fault_delay_ms": 100},
        {"fault_job_error_ratio": 0.1},
        {"fault_job_delay_ms": 100},
    ],
)
def test_faults_are_refused_outside_local_and_test(env, fault):
    name = next(iter(fault)).upper()
    with pytest.raises(ValidationError, match=f"{name}: the FAULT_\\* settings are for rehearsals only"):
        Settings(app_env=env, **fault)


@pytest.mark.unit
@pytest.mark.parametrize(
    "fault", [{"fault_error_ratio": 1.5}, {"fault_error_ratio": -0.1}, {"fault_delay_ms": -1}]
)
def test_out_of_range_faults_name_the_setting(fault):
    with pytest.raises(ValidationError, match=next(iter(fault))):
        Settings(app_env="local", **fault)


@pytest.mark.unit
def test_no_fault_by_default_anywhere():
    settings = Settings(app_env="prod")
    assert (settings.fault_error_ratio, settings.fault_delay_ms) == (0.0, 0)
    assert (settings.fault_job_error_ratio, settings.fault_job_delay_ms) == (0.0, 0)


async def _client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            yield http


@pytest.fixture
async def faulty(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async for http in _client(settings.model_copy(update={"fault_error_ratio": 0.25})):
        yield http


@pytest.fixture
async def slow(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async for http in _client(settings.model_copy(update={"fault_delay_ms": 200})):
        yield http


async def test_the_ratio_fails_that_share_with_the_error_body(faulty, auth_a):
    statuses = [(await faulty.get("/v1/generations", headers=auth_a)).status_code for _ in range(40)]
    assert statuses.count(500) == 10
    assert set(statuses) == {200, 500}
    failed = None
    while failed is None or failed.status_code != 500:
        failed = await faulty.get("/v1/generations", headers=auth_a)
    assert failed.json() == {
        "error": {"code": "internal_error", "message": "Internal server error (FAULT_ERROR_RATIO)."}
    }


async def test_probes_never_fail(faulty):
    for path in ("/health", "/ready", "/metrics") * 8:
        assert (await faulty.get(path)).status_code == 200


async def test_injected_failures_are_measured_as_500s(faulty, auth_a):
    for _ in range(8):
        await faulty.get("/v1/generations", headers=auth_a)
    text = (await faulty.get("/metrics")).text
    served = {
        s.labels["status"]: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "http_requests_total" and s.labels["route"] != "/metrics"
    }
    assert served == {"200": 6.0, "500": 2.0}


async def test_the_delay_slows_requests_but_not_probes(slow, auth_a):
    started = time.perf_counter()
    assert (await slow.get("/v1/generations", headers=auth_a)).status_code == 200
    assert time.perf_counter() - started >= 0.2
    started = time.perf_counter()
    assert (await slow.get("/health")).status_code == 200
    assert time.perf_counter() - started < 0.2
