"""UpstashRedis under the mock engine: a global, TLS-only, never-evicting database, and its DSN."""

from __future__ import annotations

from typing import Any

import pytest

from components.upstash import UpstashRedis, UpstashRedisArgs
from tests.components.conftest import ComponentMocks, Declare

pytestmark = pytest.mark.unit

TYPE = "liftoff:index:UpstashRedis"
DATABASE = "upstash:index/redisDatabase:RedisDatabase"


def program(args: UpstashRedisArgs) -> dict[str, Any]:
    redis = UpstashRedis("redis", args)
    return {"dsn": redis.dsn, "endpoint": redis.endpoint}


def test_a_protected_global_database_over_tls_that_never_evicts(declare: Declare):
    declared = declare(
        lambda: program(UpstashRedisArgs(database_name="liftoff-prod", primary_region="eu-west-1"))
    )
    database = declared.one(DATABASE)
    assert declared.child_names(TYPE) == {"redis-database"}
    assert database.inputs == {
        "databaseName": "liftoff-prod",
        "region": "global",
        "primaryRegion": "eu-west-1",
        "tls": True,
        "eviction": False,
        "budget": 20,
    }
    assert database.protect


def test_the_dsn_is_secret_tls_and_quotes_the_password(declare: Declare, mocks: ComponentMocks):
    mocks.provider_outputs[DATABASE] = {"password": "p@ss/w:rd"}
    declared = declare(
        lambda: program(UpstashRedisArgs(database_name="liftoff-prod", primary_region="eu-west-1"))
    )
    assert declared.outputs["endpoint"] == "liftoff-prod.upstash.io"
    assert declared.outputs["dsn"] == "rediss://default:p%40ss%2Fw%3Ard@liftoff-prod.upstash.io:6379"
    assert declared.secret_outputs == {"dsn"}


def test_read_regions_budget_and_protection_come_from_the_args(declare: Declare):
    args = UpstashRedisArgs(
        database_name="liftoff-staging",
        primary_region="us-east-1",
        read_regions=("eu-west-1", "ap-southeast-1"),
        budget=5,
        protect=False,
    )
    database = declare(lambda: program(args)).one(DATABASE)
    assert database.inputs["readRegions"] == ["eu-west-1", "ap-southeast-1"]
    assert database.inputs["budget"] == 5
    assert not database.protect


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        pytest.param({"primary_region": "mars-1"}, "primary_region"),
        pytest.param({"read_regions": ("eu-west-1", "mars-1")}, "read_regions"),
        ({"budget": 0}, "budget"),
    ],
)
def test_bad_args_name_the_field(overrides, field):
    with pytest.raises(ValueError, match=field):
        UpstashRedisArgs(**{"database_name": "liftoff-prod", "primary_region": "eu-west-1", **overrides})


def test_an_unknown_region_is_named():
    with pytest.raises(ValueError, match="'mars-1' is not an Upstash region"):
        UpstashRedisArgs(database_name="liftoff-prod", primary_region="mars-1")
