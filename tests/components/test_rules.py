"""The rules' own behaviour: a component's ValueError names its field, in the stack file's words."""

from __future__ import annotations

from typing import Any

import pytest

from components.cloudrun import ApiServiceArgs, Container
from components.rules import Between, OneOf, explain
from components.upstash import UpstashRedisArgs

pytestmark = pytest.mark.unit

CONTAINER = Container(image="image", image_digest="sha256:" + "0" * 64, service_account="sa@p.iam")


def api_args(**changes: Any) -> ApiServiceArgs:
    return ApiServiceArgs(
        service_name="liftoff-prod-api", region="europe-west1", project="p", container=CONTAINER, **changes
    )


def test_cross_field_rules_name_the_field():
    with pytest.raises(ValueError, match=r"^min_instances: 5 is above max_instances 2$"):
        api_args(min_instances=5, max_instances=2)
    with pytest.raises(ValueError, match=r"^invokers: a public API takes no invoker list$"):
        api_args(public=True, invokers=("user:a@example.com",))


def test_a_component_is_given_values_of_the_right_type():
    with pytest.raises(ValueError, match=r"^min_instances: must be int, got True$"):
        api_args(min_instances=True)
    with pytest.raises(ValueError, match=r"^read_regions: 'moon-1' is not an Upstash region"):
        UpstashRedisArgs(database_name="d", primary_region="us-east-1", read_regions=("moon-1",))


def test_read_regions_may_be_any_sequence_of_regions_but_not_one_string():
    for regions in (["eu-west-2"], ("eu-west-2",)):
        args = UpstashRedisArgs(database_name="d", primary_region="eu-west-1", read_regions=regions)
        assert list(args.read_regions) == ["eu-west-2"]
    with pytest.raises(ValueError, match=r"^read_regions: "):
        UpstashRedisArgs(database_name="d", primary_region="eu-west-1", read_regions="eu-west-2")


def test_rules_describe_themselves_for_the_docs():
    assert Between(1, 600_000).doc == "1 to 600,000"
    assert OneOf(frozenset({"b", "a"})).doc == "one of: `a`, `b`"


def test_explain_speaks_the_stack_file_s_words():
    assert explain({"type": "int_type", "input": "eight"}) == "must be int, got 'eight'"
    assert explain({"type": "model_type", "input": [1]}) == "must be an object, got list"
    assert explain({"type": "missing"}) == "is required"
