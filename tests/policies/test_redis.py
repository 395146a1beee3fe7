from __future__ import annotations

import pytest

from policies.common import SERVICE
from policies.redis import UPSTASH, redis_over_tls
from tests.policies.conftest import check, service

pytestmark = pytest.mark.policy


def test_tls_database_passes_and_plain_is_reported():
    assert check(redis_over_tls, UPSTASH, {"tls": True}) == []
    assert check(redis_over_tls, UPSTASH, {"tls": False})
    assert check(redis_over_tls, UPSTASH, {})


def test_plain_redis_urls_are_reported():
    assert check(
        redis_over_tls, SERVICE, service(envs=[{"name": "CACHE_URL", "value": "redis://cache:6379"}])
    )
    assert (
        check(redis_over_tls, SERVICE, service(envs=[{"name": "CACHE_URL", "value": "rediss://cache:6379"}]))
        == []
    )


@pytest.mark.parametrize("props", [{"tls": None}, service(envs=[{"value": 3}])])
def test_missing_properties_are_safe(props):
    check(redis_over_tls, SERVICE, props)
