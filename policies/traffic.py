"""Traffic splits that mean what they say: 100 % in all, and pinned revisions named."""

from __future__ import annotations

from pulumi_policy import EnforcementLevel, ReportViolation, ResourceValidationArgs, ResourceValidationPolicy

from policies.common import SERVICE, UNKNOWN, WORKER_POOL, get, items, number

SPLITS = {
    SERVICE: ("traffics", "TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION"),
    WORKER_POOL: ("instanceSplits", "INSTANCE_SPLIT_ALLOCATION_TYPE_REVISION"),
}


def validate(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    if args.resource_type not in SPLITS:
        return
    key, pinned = SPLITS[args.resource_type]
    targets = items(get(args.props, key))
    if not targets:
        return  # Cloud Run's default: all to the latest revision.
    given = [get(target, "percent") for target in targets]
    if any(percent is UNKNOWN for percent in given):
        return  # a split not known yet is checked at the update, with every percent known
    percents = [number(0 if percent is None else percent) for percent in given]
    if not all(p is not None and p.is_integer() and 0 <= p <= 100 for p in percents):
        report_violation(f"{key}: every percent must be a whole number from 0 to 100", None)
        return
    total = sum(p for p in percents if p is not None)
    if total != 100:
        report_violation(f"{key}: percents sum to {total:g}, not 100", None)
    for index, target in enumerate(targets):
        # A revision not known yet (UNKNOWN) is truthy: it will be named.
        if get(target, "type") == pinned and not get(target, "revision"):
            report_violation(f"{key}[{index}]: a pinned target must name its revision", None)


traffic_adds_up = ResourceValidationPolicy(
    name="traffic-adds-up",
    description="Traffic and instance splits sum to 100 %, and every pinned revision is named.",
    enforcement_level=EnforcementLevel.MANDATORY,
    validate=validate,
)
