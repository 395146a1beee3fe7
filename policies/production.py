"""Production safety: nothing deletable by accident, and an API that does not scale to zero."""

from __future__ import annotations

from pulumi_policy import (
    EnforcementLevel,
    PolicyConfigSchema,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
)

from policies.common import CLOUD_RUN, SERVICE, environment, mapping, number

SUPABASE_PROJECT = "pulumi-python:dynamic/supabase:Project"
# Resources the Pulumi `protect` option guards (their providers cannot see it, or have nothing else).
PROTECTED_BY_OPTION = (SUPABASE_PROJECT, "upstash:index/redisDatabase:RedisDatabase")
CONFIG = PolicyConfigSchema(properties={"environment": {"type": "string", "enum": ["staging", "prod"]}})


def validate_protection(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    if environment(args.get_config(), args.props) != "prod":
        return
    if args.resource_type in CLOUD_RUN and args.props.get("deletionProtection") is not True:
        report_violation("deletion_protection must be true in prod", None)
    if args.resource_type in PROTECTED_BY_OPTION and not args.opts.protect:
        report_violation(
            "must be created with protect=True in prod (the provider has no deletion protection)", None
        )
    # The Supabase provider refuses deletes itself only while its deletion_protection input is on.
    if args.resource_type == SUPABASE_PROJECT and args.props.get("deletion_protection") is not True:
        report_violation("deletion_protection must be true in prod", None)


def validate_api_scaling(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    if args.resource_type != SERVICE or environment(args.get_config(), args.props) != "prod":
        return
    scaling = mapping(mapping(args.props.get("template")).get("scaling"))
    minimum = number(scaling.get("minInstanceCount"))
    maximum = number(scaling.get("maxInstanceCount"))
    if minimum is None or minimum < 1:
        report_violation(f"prod API min instances must be at least 1, got {minimum}", None)
    if maximum is None or maximum < 2:
        report_violation(f"prod API max instances must be at least 2, got {maximum}", None)


prod_deletion_protection = ResourceValidationPolicy(
    name="prod-deletion-protection",
    description="In prod, Cloud Run resources set deletion_protection; the database and Redis are protected.",
    enforcement_level=EnforcementLevel.MANDATORY,
    validate=validate_protection,
    config_schema=CONFIG,
)

prod_api_scaling = ResourceValidationPolicy(
    name="prod-api-scaling",
    description="In prod, the API keeps at least one instance warm and may scale to at least two.",
    enforcement_level=EnforcementLevel.MANDATORY,
    validate=validate_api_scaling,
    config_schema=CONFIG,
)
