"""Cloud Run services, worker pools and jobs run images by digest, never by a mutable tag."""

from __future__ import annotations

from pulumi_policy import EnforcementLevel, ReportViolation, ResourceValidationArgs, ResourceValidationPolicy

from policies.common import UNKNOWN, containers, get


def validate(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    for index, container in enumerate(containers(args.resource_type, args.props)):
        image = get(container, "image")
        if image is UNKNOWN:
            # At preview, the digest of an image the update is about to build: checked at the update.
            continue
        if not isinstance(image, str) or "@sha256:" not in image:
            report_violation(
                f"container {index} runs image {image!r}, not an image by digest (…@sha256:…)", None
            )


images_by_digest = ResourceValidationPolicy(
    name="images-by-digest",
    description="Cloud Run workloads must reference their image by digest.",
    enforcement_level=EnforcementLevel.MANDATORY,
    validate=validate,
)
