from __future__ import annotations

import pytest

from policies.common import JOB, SERVICE, WORKER_POOL
from policies.production import prod_api_scaling, prod_deletion_protection
from tests.policies.conftest import check

pytestmark = pytest.mark.policy

PROD = {"environment": "prod"}


@pytest.mark.parametrize("kind", [SERVICE, WORKER_POOL, JOB])
def test_deletion_protection_in_prod(kind):
    assert check(prod_deletion_protection, kind, {"deletionProtection": True}, config=PROD) == []
    assert check(prod_deletion_protection, kind, {"deletionProtection": False}, config=PROD)
    assert check(prod_deletion_protection, kind, {}, config=PROD)
    assert (
        check(
            prod_deletion_protection, kind, {"deletionProtection": False}, config={"environment": "staging"}
        )
        == []
    )


SUPABASE = "pulumi-python:dynamic/supabase:Project"


@pytest.mark.parametrize(
    ("kind", "props"),
    [(SUPABASE, {"deletion_protection": True}), ("upstash:index/redisDatabase:RedisDatabase", {})],
)
def test_database_and_redis_are_protected_in_prod(kind, props):
    assert check(prod_deletion_protection, kind, props, config=PROD, protect=True) == []
    (message,) = check(prod_deletion_protection, kind, props, config=PROD)
    assert "protect=True" in message


def test_the_supabase_provider_keeps_its_own_deletion_protection_in_prod():
    (message,) = check(
        prod_deletion_protection, SUPABASE, {"deletion_protection": False}, config=PROD, protect=True
    )
    assert message == "deletion_protection must be true in prod"
    staging = {"environment": "staging"}
    assert check(prod_deletion_protection, SUPABASE, {"deletion_protection": False}, config=staging) == []


def test_environment_falls_back_to_the_env_label():
    props = {"deletionProtection": False, "labels": {"env": "prod"}}
    assert check(prod_deletion_protection, SERVICE, props)


def scaling(minimum: object, maximum: object) -> dict[str, object]:
    return {"template": {"scaling": {"minInstanceCount": minimum, "maxInstanceCount": maximum}}}


def test_api_scaling_in_prod():
    assert check(prod_api_scaling, SERVICE, scaling(1.0, 2.0), config=PROD) == []
    assert check(prod_api_scaling, SERVICE, scaling(0, 10), config=PROD) == [
        "prod API min instances must be at least 1, got 0.0"
    ]
    assert check(prod_api_scaling, SERVICE, scaling(1, 1), config=PROD) == [
        "prod API max instances must be at least 2, got 1.0"
    ]
    assert check(prod_api_scaling, SERVICE, scaling(0, 1), config={"environment": "staging"}) == []


@pytest.mark.parametrize("props", [{}, {"template": None}, scaling(None, "x"), scaling(True, True)])
def test_missing_properties_are_reported_not_crashed(props):
    assert check(prod_api_scaling, SERVICE, props, config=PROD)


def _running(command: str, low: float, high: float) -> dict[str, object]:
    props = scaling(low, high)
    envs = (
        [{"name": "SCALER_POOL", "value": "projects/p/locations/l/workerPools/w"}]
        if command == "scaler"
        else []
    )
    props["template"]["containers"] = [{"args": ["python", "-m", "app", command], "envs": envs}]  # type: ignore[index]
    return props


def test_api_scaling_applies_to_the_api_not_to_the_pools_scaler():
    # The scaler is one instance from zero by design: it is called by the API and the schedule only.
    assert check(prod_api_scaling, SERVICE, _running("scaler", 0, 1), config=PROD) == []
    assert check(prod_api_scaling, SERVICE, _running("api", 0, 1), config=PROD) == [
        "prod API min instances must be at least 1, got 0.0",
        "prod API max instances must be at least 2, got 1.0",
    ]
