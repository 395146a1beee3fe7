from __future__ import annotations

import pytest

from policies.common import JOB, SERVICE, WORKER_POOL
from policies.secrets import no_plain_secrets
from tests.policies.conftest import check, job, service

pytestmark = pytest.mark.policy

REF = {"name": "DATABASE_URL", "valueSource": {"secretKeyRef": {"secret": "s", "version": "1"}}}


def test_secret_references_and_plain_settings_pass():
    envs = [
        REF,
        {"name": "LOG_LEVEL", "value": "INFO"},
        {"name": "SUPABASE_JWKS_URL", "value": "https://x.supabase.co/jwks"},
    ]
    assert check(no_plain_secrets, SERVICE, service(envs=envs)) == []


@pytest.mark.parametrize(
    "env",
    [
        {"name": "OPENAI_API_KEY", "value": "sk-123"},
        {"name": "SUPABASE_JWT_SECRET", "value": "x"},
        {"name": "GITHUB_TOKEN", "value": "x"},
        {"name": "DB_PASSWORD", "value": "x"},
        {"name": "SENTRY_DSN", "value": "https://k@o0.ingest.sentry.io/0"},
        {"name": "DATABASE_URL", "value": "postgresql://postgres.ref:hunter2@pooler:6543/postgres"},
        {"name": "REDIS_URL", "value": "rediss://default:pw@host:6379"},
    ],
)
@pytest.mark.parametrize("kind", [SERVICE, WORKER_POOL, JOB])
def test_plain_secrets_are_reported(env, kind):
    props = job(envs=[env]) if kind == JOB else service(envs=[env])
    (message,) = check(no_plain_secrets, kind, props)
    assert env["name"] in message and "secret_key_ref" in message


def test_urls_without_credentials_pass():
    envs = [{"name": "OPENAI_BASE_URL", "value": "https://api.openai.com/v1"}]
    assert check(no_plain_secrets, SERVICE, service(envs=envs)) == []


@pytest.mark.parametrize("envs", [None, "x", [None], [{"value": None}], [{"name": None, "value": "a:b@c"}]])
def test_missing_properties_are_safe(envs):
    check(no_plain_secrets, SERVICE, service(envs=envs))
