"""Redis is reached over TLS only."""

from __future__ import annotations

from pulumi_policy import EnforcementLevel, ReportViolation, ResourceValidationArgs, ResourceValidationPolicy

from policies.common import containers, items, mapping

UPSTASH = "upstash:index/redisDatabase:RedisDatabase"


def validate(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    if args.resource_type == UPSTASH and args.props.get("tls") is not True:
        report_violation("the Upstash database must require TLS (tls: true)", None)
    for container in containers(args.resource_type, args.props):
        for env in items(container.get("envs")):
            value = mapping(env).get("value")
            if isinstance(value, str) and value.lower().startswith("redis://"):
                report_violation(f"{mapping(env).get('name')} reaches Redis without TLS; use rediss://", None)


redis_over_tls = ResourceValidationPolicy(
    name="redis-over-tls",
    description="Redis databases require TLS, and no workload connects with redis://.",
    enforcement_level=EnforcementLevel.MANDATORY,
    validate=validate,
)
