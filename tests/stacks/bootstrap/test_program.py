"""The bootstrap stack, rendered by the mock engine."""

from __future__ import annotations

from typing import Any

import pytest

from stacks.bootstrap.program import DEPLOYER_ROLES, NAMESPACE, BootstrapConfigError, build, load
from stacks.policy_check import evaluate
from stacks.render import ROOT, Rendering, render, stack_config
from stacks.schema import unknown_properties

pytestmark = pytest.mark.unit

BOOTSTRAP = ROOT / "stacks" / "bootstrap"


def render_bootstrap(overrides: dict[str, Any] | None = None) -> Rendering:
    config = {**stack_config("org", BOOTSTRAP), **(overrides or {})}
    return render("org", config, program=lambda: build(load()), project="liftoff-bootstrap")


@pytest.fixture(scope="module")
def bootstrap() -> Rendering:
    return render_bootstrap()


def test_state_bucket_is_private_versioned_and_protected(bootstrap):
    bucket = bootstrap.one("gcp:storage/bucket:Bucket")
    assert bucket.protect
    inputs = bucket.inputs
    assert inputs["name"] == "your-org-liftoff-state"
    assert inputs["uniformBucketLevelAccess"] is True
    assert inputs["publicAccessPrevention"] == "enforced"
    assert inputs["versioning"] == {"enabled": True}


def test_secrets_key_rotates_and_is_protected(bootstrap):
    key = bootstrap.one("gcp:kms/cryptoKey:CryptoKey")
    assert key.protect
    assert key.inputs["rotationPeriod"] == "7776000s"
    assert bootstrap.outputs["secrets_provider"].startswith("gcpkms://")
    assert bootstrap.outputs["state_backend_url"] == "gs://your-org-liftoff-state"


def test_github_federation_is_bound_to_the_repository(bootstrap):
    provider = bootstrap.one("gcp:iam/workloadIdentityPoolProvider:WorkloadIdentityPoolProvider").inputs
    assert provider["attributeCondition"] == "assertion.repository == 'your-org/liftoff'"
    assert provider["oidc"] == {"issuerUri": "https://token.actions.githubusercontent.com"}
    binding = bootstrap.one("gcp:serviceaccount/iAMMember:IAMMember").inputs
    assert binding["role"] == "roles/iam.workloadIdentityUser"
    assert binding["member"].startswith("principalSet://iam.googleapis.com/")
    assert binding["member"].endswith("/attribute.repository/your-org/liftoff")


def test_deployer_gets_exactly_the_roles_deploys_need(bootstrap):
    roles = {r.inputs["role"] for r in bootstrap.of_type("gcp:projects/iAMMember:IAMMember")}
    assert roles == set(DEPLOYER_ROLES)
    assert not roles & {"roles/owner", "roles/editor", "roles/viewer"}
    state = bootstrap.one("gcp:storage/bucketIAMMember:BucketIAMMember").inputs
    assert state["role"] == "roles/storage.objectAdmin"
    key = bootstrap.one("gcp:kms/cryptoKeyIAMMember:CryptoKeyIAMMember").inputs
    assert key["role"] == "roles/cloudkms.cryptoKeyEncrypterDecrypter"
    assert bootstrap.outputs["deployer_service_account"].startswith("liftoff-deployer@")


def test_every_property_exists_in_the_sdk_and_the_pack_is_satisfied(bootstrap):
    assert {
        r.name: unknown_properties(r) for r in bootstrap.resources if r.custom and unknown_properties(r)
    } == {}
    assert [v for v in evaluate(bootstrap, config={}) if v.mandatory] == []


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        (f"{NAMESPACE}:githubRepository", "not a repo", "githubRepository: 'not a repo' is not owner/name"),
        (f"{NAMESPACE}:stateBucket", "Bad_Bucket!", "stateBucket: 'Bad_Bucket!' is not a bucket name"),
    ],
)
def test_bad_config_names_the_key_and_registers_nothing(registrations, key, value, message):
    with pytest.raises(BootstrapConfigError, match=message):
        render_bootstrap({key: value})
    assert registrations == []
