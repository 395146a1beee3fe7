from __future__ import annotations

import pytest
from pulumi_policy import EnforcementLevel

from policies.labels import app_and_env_labels
from tests.policies.conftest import check

pytestmark = pytest.mark.policy

SECRET = "gcp:secretmanager/secret:Secret"


def test_labelled_resource_passes():
    assert check(app_and_env_labels, SECRET, {"labels": {"app": "liftoff", "env": "prod"}}) == []


def test_missing_labels_are_reported_as_advisory():
    assert app_and_env_labels.enforcement_level is EnforcementLevel.ADVISORY
    (message,) = check(app_and_env_labels, SECRET, {"labels": {"app": "liftoff"}})
    assert "['env']" in message
    assert check(app_and_env_labels, SECRET, {})


def test_types_without_labels_are_ignored():
    assert check(app_and_env_labels, "gcp:secretmanager/secretIamMember:SecretIamMember", {}) == []
