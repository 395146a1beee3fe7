"""Both stacks, rendered by the mock engine: resources, wiring, the app's contract, secrets, schema."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from app.settings import ENV_VARS, Role
from components.image import source_tag
from components.jobrun import JobRun
from stacks.ledger import Ledger, Release
from stacks.program import IMAGE_SOURCES, ROOT
from stacks.release_plan import ship
from tests.stacks.conftest import SECRETS, render_stack
from tools.render import Registered, Rendering, stack_config
from tools.schema import unknown_properties

pytestmark = pytest.mark.unit

SERVICE = "gcp:cloudrunv2/service:Service"
POOL = "gcp:cloudrunv2/workerPool:WorkerPool"
JOB = "gcp:cloudrunv2/job:Job"
SECRET_IAM = "gcp:secretmanager/secretIamMember:SecretIamMember"
CONTRACT = {var.name: var for var in ENV_VARS}


def container(resource: Registered) -> dict[str, Any]:
    template = resource.inputs["template"]
    if resource.type == JOB:
        template = template["template"]
    (only,) = template["containers"]
    return dict(only)


def envs(resource: Registered) -> dict[str, dict[str, Any]]:
    return {env["name"]: env for env in container(resource).get("envs", [])}


def workload(rendering: Rendering, role: Role) -> list[Registered]:
    if role is Role.API:
        return [s for s in rendering.of_type(SERVICE) if s.name == "api-service"]
    if role is Role.SCALER:
        return [s for s in rendering.of_type(SERVICE) if s.name == "scaler-service"]
    if role is Role.MIGRATE:
        return [j for j in rendering.of_type(JOB) if j.inputs["name"].endswith("-migrate")]
    return rendering.of_type(POOL) + [
        j for j in rendering.of_type(JOB) if j.inputs["name"].endswith("-cleanup")
    ]


@pytest.mark.parametrize("stack", ["staging", "prod"])
def test_stack_renders_every_component(stack, request):
    rendering: Rendering = request.getfixturevalue(stack)
    components = {r.type for r in rendering.resources if not r.custom}
    assert components == {
        "liftoff:index:ServiceAccounts",
        "liftoff:index:SupabaseDatabase",
        "liftoff:index:UpstashRedis",
        "liftoff:index:Secrets",
        "liftoff:index:ContainerImage",
        "liftoff:index:MigrationsJob",
        "liftoff:index:ApiService",
        "liftoff:index:WorkerPool",
        "liftoff:index:RetentionJob",
        "liftoff:index:Monitoring",
        "liftoff:index:PoolScaler",
    }
    # The API, and the worker pool's scaler (both stacks run their pools on demand).
    assert {s.name for s in rendering.of_type(SERVICE)} == {"api-service", "scaler-service"}
    assert len(rendering.of_type(POOL)) == 1
    assert len(rendering.of_type(JOB)) == 2
    # Four PromQL alerts, the uptime alert, and the on-demand pool's `Scaler failing`.
    assert len(rendering.of_type("gcp:monitoring/alertPolicy:AlertPolicy")) == 6
    assert len(rendering.of_type("gcp:monitoring/uptimeCheckConfig:UptimeCheckConfig")) == 1


def test_prod_api_service(prod):
    service = prod.one(SERVICE, "api-service").inputs
    assert service["name"] == "liftoff-prod-api"
    assert service["location"] == "europe-west1"
    assert service["deletionProtection"] is True
    # The smoke test's ID token audience, accepted on tag URLs too.
    assert service["customAudiences"] == ["liftoff-prod-api"] == [prod.outputs["api_audience"]]
    assert service["ingress"] == "INGRESS_TRAFFIC_ALL"
    template = service["template"]
    assert template["scaling"] == {"minInstanceCount": 1, "maxInstanceCount": 20}
    assert template["maxInstanceRequestConcurrency"] == 80
    assert template["timeout"] == "300s"
    assert template["serviceAccount"] == "liftoff-prod-api@liftoff-prod-000000.iam.gserviceaccount.com"
    assert template["revision"] == prod.outputs["api_revision"]
    c = container(prod.one(SERVICE, "api-service"))
    assert c["image"] == prod.outputs["image_ref"]
    assert "@sha256:" in c["image"]
    assert c["resources"]["limits"] == {"cpu": "1", "memory": "1Gi"}
    # Startup checks the process only: a dependency's outage must not keep instances from starting.
    assert c["startupProbe"]["httpGet"]["path"] == "/health"
    assert c["livenessProbe"]["httpGet"]["path"] == "/health"
    assert service["traffics"] == [
        {"type": "TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST", "percent": 100, "tag": "candidate"}
    ]
    invoker = prod.one("gcp:cloudrunv2/serviceIamMember:ServiceIamMember", "api-invoker-0").inputs
    assert (invoker["role"], invoker["member"]) == ("roles/run.invoker", "allUsers")


def test_staging_differs_where_it_should(staging):
    service = staging.one(SERVICE, "api-service").inputs
    assert service["deletionProtection"] is False
    assert service["template"]["scaling"]["minInstanceCount"] == 0
    # Staging's pool runs on demand from zero instances; prod's keeps a floor of one.
    assert staging.one(POOL).inputs["scaling"]["manualInstanceCount"] == 0


def test_private_api_names_its_invokers():
    rendering = render_stack(
        "staging",
        {"liftoff:api": {"public": False, "invokers": ["serviceAccount:ci@p.iam.gserviceaccount.com"]}},
    )
    grants = {r.name: r.inputs for r in rendering.of_type("gcp:cloudrunv2/serviceIamMember:ServiceIamMember")}
    invokers = {"api-invoker-0", "monitoring-uptime-invoker", "scaler-invoker-0", "scaler-invoker-1"}
    assert set(grants) == invokers
    assert grants["api-invoker-0"]["member"] == "serviceAccount:ci@p.iam.gserviceaccount.com"
    # The uptime check's caller, on this service only: a private API's /health answers it.
    uptime = grants["monitoring-uptime-invoker"]
    assert (uptime["name"], uptime["role"]) == ("liftoff-staging-api", "roles/run.invoker")
    assert uptime["member"].endswith("@gcp-sa-monitoring-notification.iam.gserviceaccount.com")


def test_worker_pool(prod):
    pool = prod.one(POOL).inputs
    assert pool["name"] == "liftoff-prod-worker"
    # Created at prod's floor; the scaler owns the count afterwards, so no update sends it.
    assert pool["scaling"] == {"scalingMode": "MANUAL", "manualInstanceCount": 1}
    assert "scaling" in prod.one(POOL).ignore_changes
    assert pool["instanceSplits"] == [{"type": "INSTANCE_SPLIT_ALLOCATION_TYPE_LATEST", "percent": 100}]
    assert pool["template"]["serviceAccount"].startswith("liftoff-prod-worker@")
    c = container(prod.one(POOL))
    assert c["args"] == ["python", "-m", "app", "worker"]
    assert c["image"] == prod.outputs["image_ref"]
    assert "ports" not in c
    # Nothing may invoke a worker pool: it has no endpoint. Its one grant is the scaler's own
    # role of reading and updating it (components/scaler.py).
    (grant,) = [r for r in prod.resources if "workerPool" in r.type and r.type != POOL]
    assert grant.inputs["member"].startswith("serviceAccount:liftoff-prod-scaler@")
    assert grant.inputs["name"] == "liftoff-prod-worker"


def test_migrations_run_per_image_before_the_api(prod):
    (migrate,) = [j for j in prod.of_type(JOB) if j.inputs["name"] == "liftoff-prod-migrate"]
    assert "runExecutionToken" not in migrate.inputs
    assert container(migrate)["args"] == ["python", "-m", "app", "migrate"]
    assert migrate.inputs["template"]["template"]["maxRetries"] == 0
    run = prod.one(JobRun.TYPE).inputs
    digest = prod.outputs["image_ref"].split("@")[1]
    assert run["trigger"] == f"{digest};limits=100/300"
    assert run["job"] == "projects/liftoff-prod-000000/locations/europe-west1/jobs/liftoff-prod-migrate"
    # The engine orders by dependencies only: the API and the worker must depend on the run itself.
    runner = prod.one(JobRun.TYPE)
    assert migrate.urn in runner.dependencies
    for workload in (prod.one(SERVICE, "api-service"), prod.one(POOL)):
        assert runner.urn in workload.dependencies, workload.name


def test_retention_is_scheduled(prod):
    (cleanup,) = [j for j in prod.of_type(JOB) if j.inputs["name"] == "liftoff-prod-cleanup"]
    assert container(cleanup)["args"] == ["python", "-m", "app", "cleanup"]
    schedule = prod.one("gcp:cloudscheduler/job:Job", "retention-schedule").inputs
    assert schedule["schedule"] == "17 3 * * *"
    target = schedule["httpTarget"]
    assert target["uri"].endswith("/jobs/liftoff-prod-cleanup:run")
    assert target["oauthToken"]["serviceAccountEmail"].startswith("liftoff-prod-scheduler@")
    invoker = prod.one("gcp:cloudrunv2/jobIamMember:JobIamMember").inputs
    assert invoker["role"] == "roles/run.invoker"
    assert invoker["member"].startswith("serviceAccount:liftoff-prod-scheduler@")


def test_redis_and_database(prod):
    redis = prod.one("upstash:index/redisDatabase:RedisDatabase").inputs
    assert redis["region"] == "global"
    assert redis["primaryRegion"] == "eu-west-1"
    assert (redis["tls"], redis["eviction"], redis["budget"]) == (True, False, 50)
    project = prod.one("pulumi-python:dynamic/supabase:Project")
    assert project.protect is True
    assert project.inputs["region"] == "eu-west-1"
    assert project.inputs["organization_slug"] == "replace-with-supabase-org-id"
    assert project.inputs["deletion_protection"] is True
    assert {"db_pass", "__provider"} <= project.secret_paths
    # The DSNs use the pooler the project reports, never a host built from the region.
    assert "aws-0-eu-west-1" not in prod.outputs["database_url"]
    assert "@aws-9-mock-" in prod.outputs["database_url"]
    assert prod.outputs["redis_url"].startswith("rediss://")
    assert ":6543/postgres" in prod.outputs["database_url"]
    assert ":5432/postgres" in prod.outputs["migrations_database_url"]
    assert {"database_url", "migrations_database_url", "redis_url"} <= prod.secret_outputs


def test_image_is_built_for_amd64_and_pushed(prod):
    image = prod.one("docker-build:index:Image").inputs
    assert image["platforms"] == ["linux/amd64"]
    assert image["push"] is True
    assert image["dockerfile"]["location"].endswith("app/Dockerfile")
    # The tag follows the image's sources, so an unchanged tree neither rebuilds nor shows a diff.
    tag = source_tag(ROOT, IMAGE_SOURCES)
    assert re.fullmatch(r"src-[0-9a-f]{16}", tag)
    # The repository is the stack's own: another stack in the same project has its own.
    assert image["tags"] == [f"europe-west1-docker.pkg.dev/liftoff-prod-000000/liftoff-prod/app:{tag}"]
    assert image["buildArgs"] == {"SOURCE_DATE_EPOCH": "0"}


@pytest.mark.parametrize("stack", ["staging", "prod"])
def test_every_variable_the_app_needs_reaches_its_workload(stack, request):
    rendering: Rendering = request.getfixturevalue(stack)
    for role in Role:
        for resource in workload(rendering, role):
            env = envs(resource)
            for name, item in env.items():
                var = CONTRACT.get(name)
                assert var is not None, f"{resource.name} sets {name}, which the app does not read"
                assert role in var.used_by, f"{resource.name} gets {name}, which {role} does not read"
                if var.secret:
                    assert "value" not in item, f"{name} is a plain value in {resource.name}"
                    assert item["valueSource"]["secretKeyRef"]["secret"], name
                else:
                    assert "valueSource" not in item
            for var in ENV_VARS:
                if role in var.used_by and var.required:
                    assert var.name in env, f"{resource.name} lacks required {var.name}"
            assert "PORT" not in env
    api = envs(rendering.one(SERVICE, "api-service"))
    assert "SUPABASE_JWKS_URL" in api or "SUPABASE_JWT_SECRET" in api
    assert "OPENAI_API_KEY" in envs(rendering.one(POOL))


def test_secrets_are_readable_only_by_the_workloads_that_use_them(prod):
    grants: dict[str, set[str]] = {}
    for grant in prod.of_type(SECRET_IAM):
        assert grant.inputs["role"] == "roles/secretmanager.secretAccessor"
        member = grant.inputs["member"]
        assert member.startswith("serviceAccount:liftoff-prod-")
        account = member.removeprefix("serviceAccount:liftoff-prod-").split("@")[0]
        grants.setdefault(grant.inputs["secretId"], set()).add(account)
    expected = {
        "liftoff-prod-database-url": {"api", "worker", "scaler"},
        "liftoff-prod-migrations-database-url": {"migrate"},
        "liftoff-prod-redis-url": {"api", "worker"},
        "liftoff-prod-openai-api-key": {"worker"},
        "liftoff-prod-sentry-dsn": {"api", "worker"},
        "liftoff-prod-supabase-jwt-secret": {"api"},
    }
    assert grants == expected
    # Every secret reference a workload holds points at one of these secrets.
    for role in Role:
        for resource in workload(prod, role):
            for item in envs(resource).values():
                if "valueSource" in item:
                    assert item["valueSource"]["secretKeyRef"]["secret"] in expected


def test_no_secret_value_appears_in_plain_sight(prod):
    values = [
        *SECRETS.values(),
        prod.outputs["database_url"],
        prod.outputs["migrations_database_url"],
        prod.outputs["redis_url"],
        "mock-redis-password",
    ]
    # Where a secret value belongs: the secret versions, and the providers' own secret inputs.
    allowed = {
        ("gcp:secretmanager/secretVersion:SecretVersion", "secretData"),
        ("pulumi-python:dynamic/supabase:Project", "db_pass"),
    }
    for resource in prod.resources:
        for key, value in resource.inputs.items():
            if (resource.type, key) in allowed:
                assert key in resource.secret_paths, f"{resource.type}.{key} is not marked secret"
                continue
            text = json.dumps(value, default=str)
            leaked = [v for v in values if v in text]
            assert not leaked, f"{resource.type} {resource.name}.{key} carries a secret"
    for key, value in prod.outputs.items():
        if key in prod.secret_outputs:
            continue
        text = json.dumps(value, default=str)
        assert not [v for v in values if v in text], f"output {key} carries a secret"


@pytest.mark.parametrize("stack", ["staging", "prod"])
def test_every_property_exists_in_the_provider_sdk(stack, request):
    rendering: Rendering = request.getfixturevalue(stack)
    custom = [r for r in rendering.resources if r.custom]
    assert len(custom) > 30
    problems = {f"{r.type} {r.name}": unknown_properties(r) for r in custom}
    assert {k: v for k, v in problems.items() if v} == {}


def test_schema_check_catches_a_typo(prod):
    service = prod.one(SERVICE, "api-service")
    broken = Registered(
        type=service.type,
        name=service.name,
        custom=True,
        inputs={
            **service.inputs,
            "template": {**service.inputs["template"], "maxInstanceRequestConcurency": 1},
        },
    )
    assert unknown_properties(broken) == ["template.maxInstanceRequestConcurency"]


def test_labels_on_everything_that_takes_them(prod):
    for resource in prod.resources:
        labels = resource.inputs.get("labels")
        if labels is not None and resource.type != "gcp:monitoring/notificationChannel:NotificationChannel":
            assert labels == {"app": "liftoff", "env": "prod"}, resource.name


def test_exports(prod):
    assert prod.outputs["api_url"].startswith("https://liftoff-prod-api-")
    assert prod.outputs["api_candidate_urls"] == {
        "candidate": prod.outputs["api_url"].replace("https://", "https://candidate---")
    }
    # The committed stacks leave traffic to releases: nothing declared, what serves is reported.
    assert prod.outputs["api_traffic"] is None
    assert prod.outputs["worker_split"] is None
    assert prod.outputs["worker_revision"].startswith("liftoff-prod-worker-")
    assert prod.outputs["api_revision"].startswith("liftoff-prod-api-")
    assert prod.outputs["api_serving"] == {prod.outputs["api_revision"]: 100}
    assert prod.outputs["worker_serving"] == {prod.outputs["worker_revision"]: 100}
    assert prod.outputs["release_ledger"] == []


def test_tenant_limits_are_set_per_stack_and_rerun_migrate(prod):
    limits = {
        **stack_config("prod")["liftoff:app"],
        "tenantMaxActiveJobs": 20,
        "tenantMaxSubmissionsPerMinute": 60,
    }
    tighter = render_stack("prod", {"liftoff:app": limits})
    (migrate,) = [j for j in tighter.of_type(JOB) if j.inputs["name"] == "liftoff-prod-migrate"]
    env = envs(migrate)
    assert (env["TENANT_MAX_ACTIVE_JOBS"]["value"], env["TENANT_MAX_SUBMISSIONS_PER_MINUTE"]["value"]) == (
        "20",
        "60",
    )
    # migrate writes the limits, so new limits run it again; the API and the worker never read them.
    assert tighter.one(JobRun.TYPE).inputs["trigger"] != prod.one(JobRun.TYPE).inputs["trigger"]
    assert "TENANT_MAX_ACTIVE_JOBS" not in envs(tighter.one(SERVICE, "api-service"))


def test_contract_migrations_run_only_as_a_release_lets_them(prod):
    shipping = ship(
        Release("liftoff-prod-api-1", "liftoff-prod-worker-1"), Ledger(), allowed_contract=("0099",)
    )
    released = render_stack("prod", release=shipping)
    (migrate,) = [j for j in released.of_type(JOB) if j.inputs["name"] == "liftoff-prod-migrate"]
    assert container(migrate)["args"] == ["python", "-m", "app", "migrate", "--allow-contract=0099"]
    # The same image with a contract migration let run is a new run of the migrations job.
    assert released.one(JobRun.TYPE).inputs["trigger"].endswith(";contract=0099")
    # Without a release (a plain `pulumi up`), `python -m app migrate` holds them.
    (plain,) = [j for j in prod.of_type(JOB) if j.inputs["name"] == "liftoff-prod-migrate"]
    assert container(plain)["args"] == ["python", "-m", "app", "migrate"]


@pytest.mark.parametrize("stack", ["staging", "prod"])
def test_no_workload_holds_a_project_role(stack, request):
    """Project-level roles are the bootstrap's deployers' (the pack's no-run-writers covers the rest)."""
    rendering: Rendering = request.getfixturevalue(stack)
    assert rendering.of_type("gcp:projects/iAMMember:IAMMember") == []
    assert rendering.of_type("gcp:projects/iAMBinding:IAMBinding") == []
