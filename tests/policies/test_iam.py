from __future__ import annotations

import pytest

from policies.iam import no_primitive_roles, secret_access_to_workloads
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
