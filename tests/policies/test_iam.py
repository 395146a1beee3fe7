from __future__ import annotations

import pytest

from policies.iam import (
    narrow_custom_run_roles,
    no_primitive_roles,
    no_run_writers,
    secret_access_to_workloads,
)
from tests.policies.conftest import check

pytestmark = pytest.mark.policy

SECRET_MEMBER = "gcp:secretmanager/secretIamMember:SecretIamMember"
SECRET_BINDING = "gcp:secretmanager/secretIamBinding:SecretIamBinding"
PROJECT_MEMBER = "gcp:projects/iAMMember:IAMMember"


def test_service_accounts_may_read_secrets():
    props = {
        "role": "roles/secretmanager.secretAccessor",
        "member": "serviceAccount:api@p.iam.gserviceaccount.com",
    }
    assert check(secret_access_to_workloads, SECRET_MEMBER, props) == []


@pytest.mark.parametrize(
    "member", ["allUsers", "allAuthenticatedUsers", "user:dev@example.com", "group:eng@example.com"]
)
def test_anyone_else_is_reported(member):
    assert check(secret_access_to_workloads, SECRET_MEMBER, {"member": member})
    assert check(secret_access_to_workloads, SECRET_BINDING, {"members": ["serviceAccount:a@b", member]})


@pytest.mark.parametrize("role", ["roles/owner", "roles/editor"])
def test_primitive_roles_for_service_accounts_are_reported(role):
    assert check(
        no_primitive_roles,
        PROJECT_MEMBER,
        {"role": role, "member": "serviceAccount:w@p.iam.gserviceaccount.com"},
    )


def test_narrow_roles_pass():
    props = {"role": "roles/run.invoker", "member": "serviceAccount:w@p.iam.gserviceaccount.com"}
    assert check(no_primitive_roles, PROJECT_MEMBER, props) == []


@pytest.mark.parametrize("props", [{}, {"member": None, "role": None}, {"members": 3}])
def test_missing_properties_are_safe(props):
    assert check(secret_access_to_workloads, SECRET_MEMBER, props) == []
    assert check(no_primitive_roles, PROJECT_MEMBER, props) == []


POOL_GRANT = "gcp:cloudrunv2/workerPoolIamMember:WorkerPoolIamMember"
ACCOUNT_GRANT = "gcp:serviceaccount/iAMMember:IAMMember"
CUSTOM_ROLE = "gcp:projects/iAMCustomRole:IAMCustomRole"
SCALER = "serviceAccount:liftoff-prod-scaler@p.iam.gserviceaccount.com"


@pytest.mark.parametrize("role", ["roles/run.admin", "roles/run.developer", "roles/iam.serviceAccountUser"])
@pytest.mark.parametrize(
    "kind", [POOL_GRANT, ACCOUNT_GRANT, "gcp:cloudrunv2/serviceIamMember:ServiceIamMember"]
)
def test_roles_that_rewrite_workloads_are_reported(kind, role):
    (message,) = check(no_run_writers, kind, {"role": role, "member": SCALER})
    assert role in message and "custom role" in message


def test_the_scalers_custom_role_and_invokers_pass():
    custom = {"role": "projects/p/roles/liftoff_prod_pool_scaler", "member": SCALER}
    assert check(no_run_writers, POOL_GRANT, custom) == []
    invoker = {"role": "roles/run.invoker", "member": SCALER}
    assert check(no_run_writers, "gcp:cloudrunv2/serviceIamMember:ServiceIamMember", invoker) == []


def test_custom_roles_that_write_to_cloud_run_hold_only_the_pools_count():
    scaling = {"permissions": ["run.workerpools.get", "run.workerpools.update"]}
    assert check(narrow_custom_run_roles, CUSTOM_ROLE, scaling) == []
    assert check(narrow_custom_run_roles, CUSTOM_ROLE, {"permissions": ["iam.serviceAccounts.actAs"]}) == []
    assert check(narrow_custom_run_roles, CUSTOM_ROLE, {"permissions": ["run.services.get"]}) == []
    (wider,) = check(
        narrow_custom_run_roles,
        CUSTOM_ROLE,
        {"permissions": ["run.workerpools.update", "run.services.update"]},
    )
    assert "run.services.update" in wider
    (both,) = check(
        narrow_custom_run_roles,
        CUSTOM_ROLE,
        {"permissions": ["iam.serviceAccounts.actAs", "run.workerpools.get"]},
    )
    assert "held alone" in both


def test_custom_roles_that_impersonate_are_reported():
    (message,) = check(
        narrow_custom_run_roles, CUSTOM_ROLE, {"permissions": ["iam.serviceAccounts.getAccessToken"]}
    )
    assert "getAccessToken" in message
