"""Production safety: nothing deletable by accident, and an API that does not scale to zero."""

from __future__ import annotations

from pulumi_policy import (
    EnforcementLevel,
    PolicyConfigSchema,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
)

from policies.common import CLOUD_RUN, SERVICE, UNKNOWN, containers, environment, get, items, number, read

SUPABASE_PROJECT = "pulumi-python:dynamic/supabase:Project"
# Resources the Pulumi `protect` option guards (their providers cannot see it, or have nothing else).
PROTECTED_BY_OPTION = (SUPABASE_PROJECT, "upstash:index/redisDatabase:RedisDatabase")
CONFIG = PolicyConfigSchema(properties={"environment": {"type": "string", "enum": ["staging", "prod"]}})


def validate_protection(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    if environment(args.get_config(), args.props) != "prod":
        return
    protection = get(args.props, "deletionProtection")
    # Not known yet (UNKNOWN): the update checks the value it resolves to.
    if args.resource_type in CLOUD_RUN and protection is not True and protection is not UNKNOWN:
        report_violation("deletion_protection must be true in prod", None)
    if args.resource_type in PROTECTED_BY_OPTION and not args.opts.protect:
        report_violation(
            "must be created with protect=True in prod (the provider has no deletion protection)", None
        )
    # The Supabase provider refuses deletes itself only while its deletion_protection input is on.
    if args.resource_type == SUPABASE_PROJECT and args.props.get("deletion_protection") is not True:
        report_violation("deletion_protection must be true in prod", None)


def _serves_requests(props: object) -> bool:
    """Whether a service is one users call: any but a worker pool's scaler, which is one instance
    by design, called only by the API and Cloud Scheduler, and known by the pool it sizes
    (`SCALER_POOL` in its environment)."""
    for container in containers(SERVICE, props):
        names = {get(env, "name") for env in items(get(container, "envs"))}
        if "SCALER_POOL" in names:
            return False
    return True


def validate_api_scaling(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    if args.resource_type != SERVICE or environment(args.get_config(), args.props) != "prod":
        return
    if not _serves_requests(args.props):
        return
    scaling = read(args.props, "template", "scaling")
    # A count not known yet (UNKNOWN) is left to the update; a missing one is reported.
    minimum, maximum = get(scaling, "minInstanceCount"), get(scaling, "maxInstanceCount")
    if minimum is not UNKNOWN and ((low := number(minimum)) is None or low < 1):
        report_violation(f"prod API min instances must be at least 1, got {low}", None)
    if maximum is not UNKNOWN and ((high := number(maximum)) is None or high < 2):
        report_violation(f"prod API max instances must be at least 2, got {high}", None)


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
