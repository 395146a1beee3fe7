"""The pack's name, default enforcement level and policies, importable without serving the pack.

`policies/__main__.py` assembles the PolicyPack from these (constructing it starts the analyzer's
gRPC server, as `pulumi preview --policy-pack policies` runs it); `tools/policy_check.py` starts
that same entry point to evaluate rendered stacks offline.
"""

from pulumi_policy import EnforcementLevel, ResourceValidationPolicy

from policies.exposure import api_public_only_when_declared, worker_never_public
from policies.iam import (
    narrow_custom_run_roles,
    no_primitive_roles,
    no_run_writers,
    secret_access_to_workloads,
)
from policies.images import images_by_digest
from policies.labels import app_and_env_labels
from policies.production import prod_api_scaling, prod_deletion_protection
from policies.redis import redis_over_tls
from policies.secrets import no_plain_secrets
from policies.traffic import traffic_adds_up

NAME = "liftoff"
ENFORCEMENT_LEVEL = EnforcementLevel.MANDATORY
POLICIES: tuple[ResourceValidationPolicy, ...] = (
    images_by_digest,
    no_plain_secrets,
    worker_never_public,
    api_public_only_when_declared,
    prod_deletion_protection,
    prod_api_scaling,
    traffic_adds_up,
    redis_over_tls,
    secret_access_to_workloads,
    no_primitive_roles,
    no_run_writers,
    narrow_custom_run_roles,
    app_and_env_labels,
)
