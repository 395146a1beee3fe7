from __future__ import annotations

import pytest

from policies.exposure import api_public_only_when_declared, worker_never_public
from tests.policies.conftest import check

pytestmark = pytest.mark.policy

POOL_MEMBER = "gcp:cloudrunv2/workerPoolIamMember:WorkerPoolIamMember"
POOL_BINDING = "gcp:cloudrunv2/workerPoolIamBinding:WorkerPoolIamBinding"
SERVICE_MEMBER = "gcp:cloudrunv2/serviceIamMember:ServiceIamMember"


def test_worker_pool_grants_to_accounts_pass():
    assert (
        check(worker_never_public, POOL_MEMBER, {"member": "serviceAccount:ci@p.iam.gserviceaccount.com"})
        == []
    )


@pytest.mark.parametrize("member", ["allUsers", "allAuthenticatedUsers"])
def test_public_worker_pool_is_reported(member):
    assert check(worker_never_public, POOL_MEMBER, {"member": member})
    assert check(worker_never_public, POOL_BINDING, {"members": ["serviceAccount:a@b", member]})


def test_public_api_needs_the_stack_to_say_so():
    props = {"role": "roles/run.invoker", "member": "allUsers"}
    assert check(api_public_only_when_declared, SERVICE_MEMBER, props, config={"publicApi": True}) == []
    (message,) = check(api_public_only_when_declared, SERVICE_MEMBER, props)
    assert "does not declare it public" in message
    assert check(api_public_only_when_declared, SERVICE_MEMBER, props, config={"publicApi": False})


def test_private_invokers_pass():
    props = {"role": "roles/run.invoker", "member": "serviceAccount:caller@p.iam.gserviceaccount.com"}
    assert check(api_public_only_when_declared, SERVICE_MEMBER, props) == []


@pytest.mark.parametrize("props", [{}, {"member": None}, {"members": "allUsers"}])
def test_missing_properties_are_safe(props):
    check(worker_never_public, POOL_MEMBER, props)
    check(api_public_only_when_declared, SERVICE_MEMBER, props)
