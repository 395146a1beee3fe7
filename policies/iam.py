"""IAM: secrets readable only by workload service accounts, no primitive roles for them, and no
service account able to rewrite a Cloud Run workload."""

from __future__ import annotations

from pulumi_policy import EnforcementLevel, ReportViolation, ResourceValidationArgs, ResourceValidationPolicy

from policies.common import get, items, members

SECRET_IAM = (
    "gcp:secretmanager/secretIamMember:SecretIamMember",
    "gcp:secretmanager/secretIamBinding:SecretIamBinding",
)
PROJECT_IAM = ("gcp:projects/iAMMember:IAMMember", "gcp:projects/iAMBinding:IAMBinding")
PRIMITIVE = frozenset({"roles/owner", "roles/editor"})
# IAM grants on one Cloud Run resource or one service account: where a workload's identity would be
# given power over another workload. Project-level grants of these roles are the bootstrap's, to
# its deployers (stacks/bootstrap/); the app's stacks grant no project role at all.
GRANTS = (
    "gcp:cloudrunv2/serviceIamMember:ServiceIamMember",
    "gcp:cloudrunv2/serviceIamBinding:ServiceIamBinding",
    "gcp:cloudrunv2/jobIamMember:JobIamMember",
    "gcp:cloudrunv2/jobIamBinding:JobIamBinding",
    "gcp:cloudrunv2/workerPoolIamMember:WorkerPoolIamMember",
    "gcp:cloudrunv2/workerPoolIamBinding:WorkerPoolIamBinding",
    "gcp:serviceaccount/iAMMember:IAMMember",
    "gcp:serviceaccount/iAMBinding:IAMBinding",
)
# Predefined roles that can change what a Cloud Run workload runs (its image, its identity): with
# one, a workload could deploy any image with another's secrets
# (https://cloud.google.com/run/docs/reference/iam/roles).
RUN_WRITERS = frozenset(
    {
        "roles/run.admin",
        "roles/run.developer",
        "roles/run.sourceDeveloper",
        "roles/iam.serviceAccountUser",
        "roles/iam.serviceAccountTokenCreator",
        "roles/iam.serviceAccountAdmin",
        "roles/iam.serviceAccountKeyAdmin",
        "roles/iam.workloadIdentityUser",
    }
)
CUSTOM_ROLE = "gcp:projects/iAMCustomRole:IAMCustomRole"
# What a custom role may hold when it writes to Cloud Run at all: a worker pool's count, read and set.
SCALING = frozenset({"run.workerpools.get", "run.workerpools.update"})
ACT_AS = "iam.serviceAccounts.actAs"
# Acting as another account by its credentials: no custom role of a stack holds these.
IMPERSONATION = frozenset(
    {
        "iam.serviceAccounts.getAccessToken",
        "iam.serviceAccounts.getOpenIdToken",
        "iam.serviceAccounts.signBlob",
        "iam.serviceAccounts.signJwt",
        "iam.serviceAccounts.implicitDelegation",
        "iam.serviceAccountKeys.create",
    }
)


def validate_secret_access(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    if args.resource_type not in SECRET_IAM:
        return
    for member in members(args.props):
        if not member.startswith("serviceAccount:"):
            report_violation(
                f"secret access granted to {member}; only workload service accounts may read secrets", None
            )


def validate_primitive_roles(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    # A role not known yet (UNKNOWN, not a str) is left to the update.
    role = get(args.props, "role")
    if args.resource_type not in PROJECT_IAM or not isinstance(role, str) or role not in PRIMITIVE:
        return
    for member in members(args.props):
        if member.startswith("serviceAccount:"):
            report_violation(f"{role} granted to {member}; grant the narrow roles it needs", None)


def validate_run_writers(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    role = get(args.props, "role")
    if args.resource_type not in GRANTS or not isinstance(role, str) or role not in RUN_WRITERS:
        return
    for member in members(args.props):
        if member.startswith("serviceAccount:"):
            report_violation(
                f"{role} granted to {member} can rewrite a Cloud Run workload; grant a custom role of"
                " the permissions it needs, on the one resource",
                None,
            )


def validate_custom_run_roles(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    if args.resource_type != CUSTOM_ROLE:
        return
    permissions = {p for p in items(get(args.props, "permissions")) if isinstance(p, str)}
    writes = {p for p in permissions if p.startswith("run.") and not p.endswith((".get", ".list"))}
    if writes and not permissions <= SCALING:
        report_violation(
            f"a custom role that writes to Cloud Run ({', '.join(sorted(writes))}) may hold only"
            f" {', '.join(sorted(SCALING))}; it holds {', '.join(sorted(permissions - SCALING))}",
            None,
        )
    if permissions & IMPERSONATION:
        report_violation(
            f"a custom role holds {', '.join(sorted(permissions & IMPERSONATION))}: it could act as"
            " another account with that account's credentials",
            None,
        )
    if ACT_AS in permissions and permissions != {ACT_AS}:
        report_violation(
            f"{ACT_AS} is held alone, by a role bound on one service account; this role also holds"
            f" {', '.join(sorted(permissions - {ACT_AS}))}",
            None,
        )


secret_access_to_workloads = ResourceValidationPolicy(
    name="secret-access-to-workloads",
    description="Secret Manager IAM goes only to service accounts: no allUsers, allAuthenticatedUsers,"
    " users or groups.",
    enforcement_level=EnforcementLevel.MANDATORY,
    validate=validate_secret_access,
)

no_primitive_roles = ResourceValidationPolicy(
    name="no-primitive-roles",
    description="Service accounts are never granted roles/owner or roles/editor.",
    enforcement_level=EnforcementLevel.MANDATORY,
    validate=validate_primitive_roles,
)

no_run_writers = ResourceValidationPolicy(
    name="no-run-writers",
    description="No service account gets, on a Cloud Run resource or a service account, a predefined"
    " role that can rewrite a Cloud Run workload (run.admin, run.developer, serviceAccountUser and the"
    " like).",
    enforcement_level=EnforcementLevel.MANDATORY,
    validate=validate_run_writers,
)

narrow_custom_run_roles = ResourceValidationPolicy(
    name="narrow-custom-run-roles",
    description="A custom role that writes to Cloud Run holds only a worker pool's get and update;"
    " one with iam.serviceAccounts.actAs holds nothing else.",
    enforcement_level=EnforcementLevel.MANDATORY,
    validate=validate_custom_run_roles,
)
