"""Secrets reach workloads only as Secret Manager references, never as plain values."""

from __future__ import annotations

import re

from pulumi_policy import EnforcementLevel, ReportViolation, ResourceValidationArgs, ResourceValidationPolicy

from policies.common import containers, get, items

SECRET_NAME = re.compile(r"KEY|SECRET|TOKEN|PASSWORD|DSN", re.IGNORECASE)
# scheme://user:password@host: a URL that carries its credentials.
CREDENTIAL_URL = re.compile(r"^[a-z][a-z0-9+.-]*://[^/@:\s]*:[^/@\s]+@", re.IGNORECASE)


def validate(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    for container in containers(args.resource_type, args.props):
        for env in items(get(container, "envs")):
            name, value = get(env, "name"), get(env, "value")
            if value is None:
                continue
            # A secret-looking name with a plain `value` is a violation whatever the value, so even
            # one not known yet (UNKNOWN) is reported now; a URL's credentials need the value, so
            # an unknown one is checked at the update. (Values the engine marks secret arrive
            # unwrapped: still plain environment values, readable by anyone who can view the service.)
            if isinstance(name, str) and SECRET_NAME.search(name):
                report_violation(
                    f"{name} looks like a secret but is a plain value; use a secret_key_ref", None
                )
            elif isinstance(value, str) and CREDENTIAL_URL.match(value):
                report_violation(
                    f"{name} is a URL with credentials in a plain value; use a secret_key_ref", None
                )


no_plain_secrets = ResourceValidationPolicy(
    name="no-plain-secrets",
    description="Environment variables that hold secrets must be Secret Manager references.",
    enforcement_level=EnforcementLevel.MANDATORY,
    validate=validate,
)
