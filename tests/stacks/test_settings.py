"""Invalid stack configuration fails before any resource is registered, naming the key."""

from __future__ import annotations

from typing import Any

import pytest

from stacks.settings import ConfigError, load
from tests.stacks.conftest import SECRETS, render_stack
from tools.render import stack_config

pytestmark = pytest.mark.unit


def api(**changes: Any) -> dict[str, Any]:
    return {"liftoff:api": {**stack_config("prod")["liftoff:api"], **changes}}


def worker(**changes: Any) -> dict[str, Any]:
    return {"liftoff:worker": {**stack_config("prod")["liftoff:worker"], **changes}}


BAD_CONFIGS = [
    (
        "tenant-limit-zero",
        {"liftoff:app": {"tenantMaxActiveJobs": 0}},
        "liftoff:app.tenantMaxActiveJobs",
    ),
    (
        "percents-not-100",
        api(traffic=[{"revision": "latest", "percent": 90}]),
        "liftoff:api.traffic: percents sum to 90",
    ),
    (
        "two-latest",
        api(
            traffic=[{"revision": "latest", "percent": 50}, {"revision": "latest", "percent": 50, "tag": "b"}]
        ),
        "liftoff:api.traffic: more than one target is 'latest'",
    ),
    (
        "bad-tag",
        api(traffic=[{"revision": "latest", "percent": 100, "tag": "Not_DNS"}]),
        "liftoff:api.traffic[0].tag",
    ),
    (
        "unnamed-pin",
        api(traffic=[{"revision": "stable", "percent": 100}]),
        "liftoff:api.traffic[0].revision: 'stable' is not a revision",
    ),
    ("negative-instances", worker(instances=-1), "liftoff:worker.instances: must be from 0 to 100"),
    ("bad-memory", api(memory="1GB"), "liftoff:api.memory: '1GB' is not a memory size"),
    ("bad-cpu", worker(cpu="3.5"), "liftoff:worker.cpu: '3.5' is not a CPU value"),
    ("bad-region", {"gcp:region": "mars-north1"}, "gcp:region: 'mars-north1' is not a Cloud Run region"),
    ("bad-project", {"gcp:project": "Not A Project"}, "gcp:project: 'Not A Project' is not a GCP project id"),
    ("missing-alert-email", {"liftoff:alerts": {}}, "liftoff:alerts.email: is required"),
    (
        "min-above-max",
        api(minInstances=5, maxInstances=2),
        "liftoff:api.minInstances: 5 is above maxInstances 2",
    ),
    (
        "supabase-plan-is-per-organization",
        {"liftoff:supabase": {"organizationId": "org", "plan": "pro"}},
        "liftoff:supabase.plan: Supabase sets the plan per organization",
    ),
    (
        "supabase-pooler-host-comes-from-the-api",
        {"liftoff:supabase": {"organizationId": "org", "poolerHost": "aws-0-eu-west-1.pooler.supabase.com"}},
        "liftoff:supabase.poolerHost: the pooler host now comes from the Management API",
    ),
    (
        "prod-without-protection",
        api(deletionProtection=False),
        "liftoff:api.deletionProtection: must be true in prod",
    ),
    (
        "bad-supabase-region",
        {"liftoff:supabase": {"mode": "create", "organizationId": "org", "region": "eu-west-9"}},
        "liftoff:supabase.region: 'eu-west-9' is not one of",
    ),
    (
        "adopt-without-ref",
        {"liftoff:supabase": {"mode": "adopt"}},
        "liftoff:supabase.projectRef: is required",
    ),
    (
        "bad-upstash-region",
        {"liftoff:redis": {"primaryRegion": "moon-1"}},
        "liftoff:redis.primaryRegion: 'moon-1'",
    ),
    ("unknown-key", api(minInstance=1), "liftoff:api.minInstance: unknown key"),
    # Python's field names are not the stack file's keys: snake_case is unknown, even beside a default.
    ("snake-case-key", api(min_instances=3), "liftoff:api.min_instances: unknown key"),
    (
        "snake-case-usage-key",
        {"liftoff:usage": {"requests_per_month": 5}},
        "liftoff:usage.requests_per_month: unknown key",
    ),
    (
        "snake-case-alert-key",
        {"liftoff:alerts": {"email": "a@b.co", "p95_latency_ms": 100}},
        "liftoff:alerts.p95_latency_ms: unknown key",
    ),
    (
        "bad-schedule",
        {"liftoff:retention": {"schedule": "daily"}},
        "liftoff:retention.schedule: must be a 5-field cron",
    ),
    ("wrong-type", worker(concurrency="eight"), "liftoff:worker.concurrency: must be int, got 'eight'"),
    (
        "worker-split-tag",
        worker(split=[{"revision": "latest", "percent": 100, "tag": "x"}]),
        "liftoff:worker.split[0].tag",
    ),
    (
        "bad-ratio",
        {"liftoff:alerts": {"email": "a@b.co", "errorRatio": 2}},
        "liftoff:alerts.errorRatio: must be between 0 and 1",
    ),
    (
        "release-steps-fall",
        {"liftoff:release": {"steps": [50, 10, 100]}},
        "liftoff:release.steps: must rise strictly",
    ),
    (
        "release-steps-short-of-100",
        {"liftoff:release": {"steps": [10, 50]}},
        "liftoff:release.steps: must end at 100",
    ),
    (
        "release-soak-below-ingestion-delay",
        {"liftoff:release": {"soakSeconds": 60}},
        "liftoff:release.soakSeconds: 60 is shorter than Cloud Monitoring's ingestion delay",
    ),
    (
        "release-unknown-key",
        {"liftoff:release": {"soakSecond": 300}},
        "liftoff:release.soakSecond: Extra inputs are not permitted",
    ),
    (
        "release-snake-case-key",
        {"liftoff:release": {"soak_seconds": 300}},
        "liftoff:release.soak_seconds: Extra inputs are not permitted",
    ),
    (
        "release-bad-choice",
        {"liftoff:release": {"onInconclusive": "shrug"}},
        "liftoff:release.onInconclusive",
    ),
    (
        "release-not-a-mapping",
        {"liftoff:release": [10, 100]},
        "liftoff:release: must be a mapping",
    ),
]


@pytest.mark.parametrize(("case", "overrides", "message"), BAD_CONFIGS, ids=[c[0] for c in BAD_CONFIGS])
def test_bad_config_names_the_key_and_registers_nothing(registrations, case, overrides, message):
    with pytest.raises(ConfigError) as caught:
        render_stack("prod", overrides)
    assert message in str(caught.value), str(caught.value)
    assert registrations == []


def test_missing_secret_names_the_command_to_set_it():
    with pytest.raises(ConfigError, match=r"liftoff:openaiApiKey: is required .*pulumi config set --secret"):
        render_stack("prod", secrets={})


def test_missing_supabase_token_names_the_key(registrations):
    secrets = {k: v for k, v in SECRETS.items() if k != "supabase:accessToken"}
    with pytest.raises(ConfigError, match=r"supabase:accessToken: is required.*--secret supabase:access"):
        render_stack("prod", secrets=secrets)
    assert registrations == []


def test_release_problems_come_with_the_others(registrations):
    bad = {"liftoff:release": {"steps": [10, 50], "soakSeconds": 30}, **worker(memory="lots")}
    with pytest.raises(ConfigError) as caught:
        render_stack("prod", bad)
    keys = {problem.split(":", 2)[1].split(" ")[0] for problem in caught.value.problems}
    assert {"release.steps", "worker.memory"} <= keys, caught.value.problems
    assert registrations == []


def test_traffic_is_left_to_releases_unless_the_stack_file_pins_it():
    config = {**stack_config("prod"), "liftoff:alerts": {"email": "oncall@example.com"}}
    settings = load(DictSource(config, SECRETS), stack="prod")
    assert settings.api.traffic is None
    assert settings.worker.split is None
    assert settings.release.steps == (30, 50, 100)
    assert settings.release.approval is True
    pinned = {
        **config,
        **api(traffic=[{"revision": "liftoff-prod-api-aa1b3339-7b29574", "percent": 100}]),
        **worker(split=[{"revision": "latest", "percent": 100}]),
    }
    settings = load(DictSource(pinned, SECRETS), stack="prod")
    assert settings.api.traffic is not None and settings.api.traffic[0].revision.endswith("7b29574")
    assert settings.worker.split is not None and settings.worker.split[0].is_latest


def test_every_problem_is_reported_at_once():
    with pytest.raises(ConfigError) as caught:
        render_stack("prod", {"gcp:region": "nowhere", **worker(instances=-3, memory="lots")})
    assert len(caught.value.problems) >= 3


class DictSource:
    """Config from plain dictionaries, to test the loader without the engine."""

    def __init__(self, config: dict[str, Any], secrets: dict[str, str]) -> None:
        self.config = config
        self.secrets = secrets

    def get(self, namespace: str, key: str) -> Any:
        return self.config.get(f"{namespace}:{key}")

    def get_secret(self, namespace: str, key: str) -> Any:
        return self.secrets.get(f"{namespace}:{key}")


def test_defaults_are_secure():
    config = {
        "gcp:project": "my-project-1",
        "gcp:region": "us-central1",
        "liftoff:supabase": {"organizationId": "o"},
    }
    config["liftoff:alerts"] = {"email": "oncall@example.com"}
    settings = load(DictSource(config, SECRETS), stack="prod")
    assert settings.api.public is False
    assert settings.api.deletion_protection is True
    assert settings.api.min_instances == 1
    assert settings.redis.primary_region == "us-east-1"
    assert settings.supabase.region == "us-east-1"
    staging = load(DictSource(config, SECRETS), stack="staging")
    assert staging.api.deletion_protection is False


def test_a_section_reports_its_cross_key_problems_with_its_field_problems(registrations):
    bad = api(
        minInstances=5, maxInstances=2, public=True, invokers=["user:a@example.com"], deletionProtection=False
    )
    bad["liftoff:api"]["memory"] = "lots"
    with pytest.raises(ConfigError) as caught:
        render_stack("prod", {**bad, "liftoff:supabase": {"mode": "adopt", "region": "nowhere"}})
    problems = caught.value.problems
    for expected in (
        "liftoff:api.minInstances: 5 is above maxInstances 2",
        "liftoff:api.invokers: a public API takes no invoker list",
        "liftoff:api.deletionProtection: must be true in prod",
        "liftoff:api.memory: 'lots' is not a memory size",
        "liftoff:supabase.projectRef: is required when mode is adopt",
        "liftoff:supabase.region: 'nowhere' is not one of",
        "liftoff:supabaseDbPassword: is required when supabase.mode is adopt",
    ):
        assert any(problem.startswith(expected) for problem in problems), (expected, problems)
    assert registrations == []


def test_short_ingress_names_become_cloud_run_settings():
    config = {**stack_config("prod"), "liftoff:alerts": {"email": "oncall@example.com"}}
    settings = load(DictSource(config, SECRETS), stack="prod")
    assert settings.api.ingress == "INGRESS_TRAFFIC_ALL"
    internal = {**config, **api(ingress="internal-and-load-balancer")}
    settings = load(DictSource(internal, SECRETS), stack="prod")
    assert settings.api.ingress == "INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER"
