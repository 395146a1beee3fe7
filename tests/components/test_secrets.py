"""Secrets under the mock engine: a secret per name, its value as a secret version, accessors per secret."""

from __future__ import annotations

from typing import Any

import pulumi
import pytest

from components.secrets import Secrets, SecretsArgs, SecretSpec
from tests.components.conftest import Declare, Declared

pytestmark = pytest.mark.unit

TYPE = "liftoff:index:Secrets"
SECRET = "gcp:secretmanager/secret:Secret"
VERSION = "gcp:secretmanager/secretVersion:SecretVersion"
ACCESSOR = "gcp:secretmanager/secretIamMember:SecretIamMember"
PROPAGATION = "pulumi-python:dynamic/liftoff:GrantPropagation"
ACCOUNTS = {
    "api": "liftoff-prod-api@acme-prod.iam.gserviceaccount.com",
    "worker": "liftoff-prod-worker@acme-prod.iam.gserviceaccount.com",
}
LABELS = {"app": "liftoff"}


def secrets_args(**overrides: Any) -> SecretsArgs:
    values: dict[str, Any] = {
        "prefix": "liftoff-prod",
        "secrets": {
            "OPENAI_API_KEY": SecretSpec(value="sk-test-openai-key-value", accessors=("worker",)),
            "DATABASE_URL": SecretSpec(value="postgresql://u:p@h/db", accessors=("worker", "api")),
        },
        "accounts": ACCOUNTS,
        "labels": LABELS,
        **overrides,
    }
    return SecretsArgs(**values)


def program(args: SecretsArgs) -> dict[str, Any]:
    secrets = Secrets("secrets", args)
    exports: dict[str, Any] = {}
    for name, ref in secrets.refs.items():
        exports[f"{name}.secret"] = ref.secret
        exports[f"{name}.version"] = ref.version
        exports[f"{name}.grants"] = pulumi.Output.all(*(grant.urn for grant in ref.grants))
    return exports


@pytest.fixture
def declared(declare: Declare) -> Declared:
    return declare(lambda: program(secrets_args()))


def test_each_secret_is_replicated_automatically_and_labelled(declared):
    assert {r.name: r.inputs for r in declared.of_type(SECRET)} == {
        "secrets-liftoff-prod-database-url": {
            "secretId": "liftoff-prod-database-url",
            "replication": {"auto": {}},
            "labels": LABELS,
        },
        "secrets-liftoff-prod-openai-api-key": {
            "secretId": "liftoff-prod-openai-api-key",
            "replication": {"auto": {}},
            "labels": LABELS,
        },
    }


def test_values_go_in_as_secret_versions_that_outlive_their_replacement(declared):
    version = declared.one(VERSION, "secrets-liftoff-prod-openai-api-key-version")
    secret = declared.one(SECRET, "secrets-liftoff-prod-openai-api-key")
    assert version.inputs == {
        "secret": secret.id,
        "secretData": "sk-test-openai-key-value",
        "deletionPolicy": "ABANDON",
    }
    assert "secretData" in version.secret_paths, "the value never travels in the clear"
    assert secret.urn in version.dependencies


def test_only_the_named_accounts_may_read_each_secret(declared):
    accessors = {r.name: r.inputs for r in declared.of_type(ACCESSOR)}
    assert accessors == {
        "secrets-liftoff-prod-database-url-api-accessor": {
            "secretId": "liftoff-prod-database-url",
            "role": "roles/secretmanager.secretAccessor",
            "member": f"serviceAccount:{ACCOUNTS['api']}",
        },
        "secrets-liftoff-prod-database-url-worker-accessor": {
            "secretId": "liftoff-prod-database-url",
            "role": "roles/secretmanager.secretAccessor",
            "member": f"serviceAccount:{ACCOUNTS['worker']}",
        },
        "secrets-liftoff-prod-openai-api-key-worker-accessor": {
            "secretId": "liftoff-prod-openai-api-key",
            "role": "roles/secretmanager.secretAccessor",
            "member": f"serviceAccount:{ACCOUNTS['worker']}",
        },
    }


def test_everything_is_a_child_of_the_component(declared):
    assert len(declared.children(TYPE)) == len(declared.resources) - 1 == 8


def test_refs_pin_the_version_and_carry_the_grants(declared):
    outputs = declared.outputs
    assert outputs["DATABASE_URL.secret"] == "liftoff-prod-database-url"
    version = declared.one(VERSION, "secrets-liftoff-prod-database-url-version")
    assert outputs["DATABASE_URL.version"] == version.outputs["version"]
    grants = {r.urn for r in declared.of_type(ACCESSOR) if "database-url" in r.name}
    wait = declared.one(PROPAGATION).urn
    assert set(outputs["DATABASE_URL.grants"]) == grants | {wait}
    assert len(outputs["OPENAI_API_KEY.grants"]) == 2


def test_what_reads_a_secret_waits_for_new_grants_to_take_effect(declared):
    """Cloud Run checks access when a job or revision is created; IAM takes time to propagate."""
    wait = declared.one(PROPAGATION)
    accessors = declared.of_type(ACCESSOR)
    assert set(wait.dependencies) >= {r.urn for r in accessors}
    assert sorted(wait.inputs["grants"]) == sorted(r.id for r in accessors)
    assert wait.inputs["seconds"] == 120


def test_a_secret_output_value_stays_secret(declare: Declare):
    value = pulumi.Output.secret("from-another-resource")
    args = secrets_args(secrets={"SENTRY_DSN": SecretSpec(value=value, accessors=("api",))})
    declared = declare(lambda: program(args))
    version = declared.one(VERSION)
    assert version.inputs["secretData"] == "from-another-resource"
    assert "secretData" in version.secret_paths


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        pytest.param(
            {"secrets": {"BAD NAME": SecretSpec(value="v", accessors=("api",))}},
            "secrets",
        ),
        pytest.param({"secrets": {"TOKEN": SecretSpec(value="v", accessors=())}}, "accessors"),
        pytest.param(
            {"secrets": {"TOKEN": SecretSpec(value="v", accessors=("scheduler",))}},
            "accessors",
        ),
    ],
)
def test_bad_args_name_the_field(overrides, field):
    with pytest.raises(ValueError, match=field):
        secrets_args(**overrides)


@pytest.mark.parametrize(
    ("secret", "accessors", "named"),
    [
        ("BAD NAME", ("api",), "'BAD NAME'"),
        ("TOKEN", (), "'TOKEN'"),
        ("TOKEN", ("scheduler",), "scheduler"),
    ],
)
def test_bad_secrets_are_named(secret, accessors, named):
    with pytest.raises(ValueError, match=named):
        secrets_args(secrets={secret: SecretSpec(value="v", accessors=accessors)})
