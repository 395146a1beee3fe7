from __future__ import annotations

import pytest

from policies.common import JOB, SERVICE, WORKER_POOL
from policies.images import images_by_digest
from tests.policies.conftest import DIGEST, check, job, service

pytestmark = pytest.mark.policy


@pytest.mark.parametrize("kind", [SERVICE, WORKER_POOL])
def test_digest_passes_and_tag_is_reported(kind):
    assert check(images_by_digest, kind, service()) == []
    (message,) = check(images_by_digest, kind, {"template": {"containers": [{"image": "app:latest"}]}})
    assert "not an image by digest" in message


def test_jobs_too():
    assert check(images_by_digest, JOB, job()) == []
    assert check(images_by_digest, JOB, job(image=DIGEST.split("@")[0] + ":v1"))


@pytest.mark.parametrize(
    "props", [{}, {"template": None}, {"template": {"containers": "x"}}, service(image=None)]
)
def test_missing_properties_are_safe(props):
    check(images_by_digest, SERVICE, props)


def test_other_types_are_ignored():
    assert check(images_by_digest, "gcp:storage/bucket:Bucket", {"template": "anything"}) == []
