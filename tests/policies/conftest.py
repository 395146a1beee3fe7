"""Run a policy the way the engine does: through the pack's own gRPC analyzer server.

One server (policies/__main__.py, started as the CLI starts it) serves the whole session; `check`
configures it for the policy under test, sends the resource over `Analyze` with its properties
marshalled as the engine marshals them, and returns that policy's messages. So every rule's
fixtures reach the validators as `unknown_checking_proxy` objects, never as plain dicts.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from pulumi_policy import ResourceValidationPolicy

from policies.pack import POLICIES
from tools.policy_check import PolicyAnalyzer
from tools.render import Registered

DIGEST = "europe-west1-docker.pkg.dev/p/liftoff/app@sha256:" + "ab" * 32
_RUNNING: list[PolicyAnalyzer] = []


@pytest.fixture(scope="session", autouse=True)
def policy_analyzer() -> Iterator[PolicyAnalyzer]:
    """The pack's analyzer server, for the whole session."""
    with PolicyAnalyzer(stack="test") as analyzer:
        _RUNNING.append(analyzer)
        yield analyzer
        _RUNNING.clear()


def resource(resource_type: str, props: Mapping[str, Any], *, protect: bool = False) -> Registered:
    """A registration as the mock engine records one."""
    return Registered(
        type=resource_type,
        name="r",
        custom=True,
        inputs=dict(props),
        protect=protect,
        urn=f"urn:pulumi:test::liftoff::{resource_type}::r",
    )


def check(
    policy: ResourceValidationPolicy,
    resource_type: str,
    props: Mapping[str, Any],
    *,
    config: Mapping[str, Any] | None = None,
    protect: bool = False,
) -> list[str]:
    """The violation messages the policy reports for one resource, through the analyzer server."""
    assert policy in POLICIES, f"{policy.name} is not in the pack (policies/pack.py)"
    assert _RUNNING, "the policy analyzer fixture is not running"
    analyzer = _RUNNING[0]
    analyzer.configure({policy.name: dict(config or {})})
    found = analyzer.analyze(resource(resource_type, props, protect=protect))
    return [v.message for v in found if v.policy == policy.name]


def service(**container: Any) -> dict[str, Any]:
    return {"template": {"containers": [{"image": DIGEST, **container}]}}


def job(**container: Any) -> dict[str, Any]:
    return {"template": {"template": {"containers": [{"image": DIGEST, **container}]}}}


# The rendered stacks, shared with tests/stacks.
from tests.stacks.conftest import prod, staging  # noqa: E402, F401
