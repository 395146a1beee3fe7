"""Call a policy's validators directly, as the policy runtime does."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pulumi_policy import (
    PolicyCustomTimeouts,
    PolicyResourceOptions,
    ResourceValidationArgs,
    ResourceValidationPolicy,
)

DIGEST = "europe-west1-docker.pkg.dev/p/liftoff/app@sha256:" + "ab" * 32


def check(
    policy: ResourceValidationPolicy,
    resource_type: str,
    props: Mapping[str, Any],
    *,
    config: Mapping[str, Any] | None = None,
    protect: bool = False,
) -> list[str]:
    """The violation messages the policy reports for one resource."""
    options = PolicyResourceOptions(
        protect=protect,
        ignore_changes=[],
        delete_before_replace=None,
        aliases=[],
        custom_timeouts=PolicyCustomTimeouts(0, 0, 0),
        additional_secret_outputs=[],
    )
    args = ResourceValidationArgs(
        resource_type=resource_type,
        props=props,
        urn=f"urn:pulumi:test::liftoff::{resource_type}::r",
        name="r",
        opts=options,
        provider=None,
        config=config or {},
    )
    found: list[str] = []

    def report(message: str, urn: str | None = None) -> None:
        found.append(message)

    validators = policy.validate if isinstance(policy.validate, list) else [policy.validate]
    for validator in validators:
        assert validator is not None
        validator(args, report)
    return found


def service(**container: Any) -> dict[str, Any]:
    return {"template": {"containers": [{"image": DIGEST, **container}]}}


def job(**container: Any) -> dict[str, Any]:
    return {"template": {"template": {"containers": [{"image": DIGEST, **container}]}}}


# The rendered stacks, shared with tests/stacks.
from tests.stacks.conftest import prod, staging  # noqa: E402, F401
