"""Redis is reached over TLS only."""

from __future__ import annotations

from pulumi_policy import EnforcementLevel, ReportViolation, ResourceValidationArgs, ResourceValidationPolicy

from policies.common import UNKNOWN, containers, get, items

UPSTASH = "upstash:index/redisDatabase:RedisDatabase"


def validate(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    tls = get(args.props, "tls")
    # Not known yet (UNKNOWN): the update checks the value it resolves to.
    if args.resource_type == UPSTASH and tls is not True and tls is not UNKNOWN:
        report_violation("the Upstash database must require TLS (tls: true)", None)
    for container in containers(args.resource_type, args.props):
        for env in items(get(container, "envs")):
            # A URL not known yet (UNKNOWN, not a str) is checked at the update.
            value = get(env, "value")
            if isinstance(value, str) and value.lower().startswith("redis://"):
                report_violation(f"{get(env, 'name')} reaches Redis without TLS; use rediss://", None)


redis_over_tls = ResourceValidationPolicy(
    name="redis-over-tls",
    description="Redis databases require TLS, and no workload connects with redis://.",
    enforcement_level=EnforcementLevel.MANDATORY,
    validate=validate,
)
