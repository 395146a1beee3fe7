"""Evaluate a rendered stack against the policy pack offline, as `pulumi preview --policy-pack` would."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pulumi_policy import (
    EnforcementLevel,
    PolicyCustomTimeouts,
    PolicyResourceOptions,
    ResourceValidationArgs,
)

from policies.pack import POLICIES
from stacks.render import Registered, Rendering

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True, order=True)
class Violation:
    """One policy's finding on one resource."""

    mandatory: bool
    policy: str
    resource: str
    message: str


def policy_config(stack: str, root: Path = ROOT) -> dict[str, dict[str, Any]]:
    """The pack's configuration for a stack: policies/config.<stack>.json, also given to the CLI."""
    path = root / "policies" / f"config.{stack}.json"
    loaded: dict[str, dict[str, Any]] = json.loads(path.read_text()) if path.exists() else {}
    return loaded


def _args(resource: Registered, config: Mapping[str, Any]) -> ResourceValidationArgs:
    options = PolicyResourceOptions(
        protect=resource.protect,
        ignore_changes=[],
        delete_before_replace=None,
        aliases=[],
        custom_timeouts=PolicyCustomTimeouts(0, 0, 0),
        additional_secret_outputs=[],
        parent=resource.parent,
    )
    return ResourceValidationArgs(
        resource_type=resource.type,
        props=resource.inputs,
        urn=resource.urn,
        name=resource.name,
        opts=options,
        provider=None,
        config=config,
    )


def _reporter(found: list[Violation], mandatory: bool, policy: str, where: str) -> Any:
    def report(message: str, urn: str | None = None) -> None:
        found.append(Violation(mandatory, policy, where, message))

    return report


def evaluate(rendering: Rendering, config: Mapping[str, Mapping[str, Any]] | None = None) -> list[Violation]:
    """Every violation of every policy over the rendered resources, sorted."""
    config = policy_config(rendering.stack) if config is None else config
    found: list[Violation] = []
    for resource in rendering.resources:
        if not resource.custom:
            continue
        for policy in POLICIES:
            args = _args(resource, config.get(policy.name, {}))
            mandatory = policy.enforcement_level is not EnforcementLevel.ADVISORY
            validators = policy.validate if isinstance(policy.validate, list) else [policy.validate]
            where = f"{resource.type}::{resource.name}"
            for validator in validators:
                if validator is not None:
                    validator(args, _reporter(found, mandatory, policy.name, where))
    return sorted(found)
