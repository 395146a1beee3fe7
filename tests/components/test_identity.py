"""ServiceAccounts under the mock engine: one account per workload, project roles only when asked."""

from __future__ import annotations

from typing import Any

import pytest

from components.identity import ServiceAccounts, ServiceAccountsArgs
from tests.components.conftest import Declare

pytestmark = pytest.mark.unit

TYPE = "liftoff:index:ServiceAccounts"
ACCOUNT = "gcp:serviceaccount/account:Account"
MEMBER = "gcp:projects/iAMMember:IAMMember"


def accounts_args(**overrides: Any) -> ServiceAccountsArgs:
    values: dict[str, Any] = {"project": "acme-prod", "prefix": "liftoff-prod", "accounts": ("api", "worker")}
    return ServiceAccountsArgs(**{**values, **overrides})


def test_one_account_per_workload_and_no_project_roles_by_default(declare: Declare):
    declared = declare(lambda: dict(ServiceAccounts("identity", accounts_args()).emails))
    assert {(r.type, r.name) for r in declared.children(TYPE)} == {
        (ACCOUNT, "identity-api"),
        (ACCOUNT, "identity-worker"),
    }
    assert declared.of_type(MEMBER) == []
    api = declared.one(ACCOUNT, "identity-api")
    assert api.inputs == {
        "accountId": "liftoff-prod-api",
        "displayName": "Liftoff api",
        "description": "Runs the Liftoff api workload.",
        "project": "acme-prod",
    }
    assert declared.outputs == {
        "api": "liftoff-prod-api@acme-prod.iam.gserviceaccount.com",
        "worker": "liftoff-prod-worker@acme-prod.iam.gserviceaccount.com",
    }


def test_project_roles_are_granted_to_that_account_only(declare: Declare):
    args = accounts_args(project_roles={"worker": ("roles/cloudtrace.agent", "roles/logging.logWriter")})
    declared = declare(lambda: dict(ServiceAccounts("identity", args).emails))
    members = {r.name: r for r in declared.children(TYPE) if r.type == MEMBER}
    assert set(members) == {"identity-worker-cloudtrace.agent", "identity-worker-logging.logWriter"}
    worker = declared.one(ACCOUNT, "identity-worker")
    for role in ("roles/cloudtrace.agent", "roles/logging.logWriter"):
        member = members[f"identity-worker-{role.removeprefix('roles/')}"]
        assert member.inputs == {
            "project": "acme-prod",
            "role": role,
            "member": "serviceAccount:liftoff-prod-worker@acme-prod.iam.gserviceaccount.com",
        }
        assert worker.urn in member.dependencies, "granted to the account the component created"


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        # `accounts` makes the account ids with the prefix: 6 to 30 characters, a-z0-9-.
        ({"accounts": ("API",)}, "account"),
        ({"prefix": "l", "accounts": ("a",)}, "account"),
        ({"prefix": "liftoff-production-environment", "accounts": ("worker",)}, "account"),
        pytest.param({"project_roles": {"migrate": ("roles/cloudsql.client",)}}, "project_roles"),
        pytest.param({"project_roles": {"api": ("roles/editor",)}}, "project_roles"),
    ],
)
def test_bad_args_name_the_field(overrides, field):
    with pytest.raises(ValueError, match=field):
        accounts_args(**overrides)


def test_primitive_roles_are_refused_by_name():
    with pytest.raises(ValueError, match="roles/owner"):
        accounts_args(project_roles={"api": ("roles/logging.logWriter", "roles/owner")})
