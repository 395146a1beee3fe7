"""The Cloud Run components under the mock engine: ApiService, WorkerPool, MigrationsJob, RetentionJob.

What serves and what a release may change (serving, traffic_only) is in test_release_managed.py.
"""

from __future__ import annotations

from typing import Any

import pulumi
import pulumi_gcp as gcp
import pytest

from components.cloudrun import (
    ApiService,
    ApiServiceArgs,
    Container,
    JobArgs,
    MigrationsJob,
    RetentionJob,
    RetentionJobArgs,
    WorkerPool,
    WorkerPoolArgs,
)
from components.jobrun import JobRun
from components.secrets import SecretRef
from components.traffic import TrafficTarget
from tests.components.conftest import ComponentMocks, Declare, Declared

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def engine(mocks: ComponentMocks) -> ComponentMocks:
    """Every test here builds secret references, which are outputs: the mock engine runs them."""
    return mocks


SERVICE = "gcp:cloudrunv2/service:Service"
INVOKER = "gcp:cloudrunv2/serviceIamMember:ServiceIamMember"
POOL = "gcp:cloudrunv2/workerPool:WorkerPool"
JOB = "gcp:cloudrunv2/job:Job"
JOB_INVOKER = "gcp:cloudrunv2/jobIamMember:JobIamMember"
SCHEDULE = "gcp:cloudscheduler/job:Job"
ACCOUNT = "gcp:serviceaccount/account:Account"
DIGEST = "sha256:" + "ab" * 32
IMAGE = f"europe-west1-docker.pkg.dev/acme-prod/liftoff/app@{DIGEST}"
API_ACCOUNT = "liftoff-prod-api@acme-prod.iam.gserviceaccount.com"
SCHEDULER = "liftoff-prod-scheduler@acme-prod.iam.gserviceaccount.com"
PLACE = {"region": "europe-west1", "project": "acme-prod"}
ENVS = [
    {"name": "APP_ENV", "value": "prod"},
    {"name": "LOG_LEVEL", "value": "info"},
    {
        "name": "DATABASE_URL",
        "valueSource": {"secretKeyRef": {"secret": "liftoff-prod-database-url", "version": "3"}},
    },
]


def database_url(grants: tuple[pulumi.Resource, ...] = ()) -> SecretRef:
    return SecretRef(
        secret=pulumi.Output.from_input("liftoff-prod-database-url"),
        version=pulumi.Output.from_input("3"),
        grants=grants,
    )


def container(**overrides: Any) -> Container:
    values: dict[str, Any] = {
        "image": IMAGE,
        "image_digest": DIGEST,
        "service_account": API_ACCOUNT,
        "env": {"LOG_LEVEL": "info", "APP_ENV": "prod"},
        "secret_env": {"DATABASE_URL": database_url()},
        **overrides,
    }
    return Container(**values)


def api_args(**overrides: Any) -> ApiServiceArgs:
    values: dict[str, Any] = {
        "service_name": "liftoff-prod-api",
        **PLACE,
        "container": container(),
        **overrides,
    }
    return ApiServiceArgs(**values)


def pool_args(**overrides: Any) -> WorkerPoolArgs:
    values: dict[str, Any] = {
        "pool_name": "liftoff-prod-worker",
        **PLACE,
        "container": container(),
        **overrides,
    }
    return WorkerPoolArgs(**values)


def job_args(**overrides: Any) -> JobArgs:
    values: dict[str, Any] = {
        "job_name": "liftoff-prod-migrate",
        **PLACE,
        "container": container(),
        "command": ("python", "-m", "app", "migrate"),
        **overrides,
    }
    return JobArgs(**values)


def api(declare: Declare, args: ApiServiceArgs) -> Declared:
    def program() -> dict[str, Any]:
        service = ApiService("api", args)
        return {"url": service.url, "revision": service.revision, "serving": service.serving}

    return declare(program)


def only_container(workload: dict[str, Any]) -> dict[str, Any]:
    (found,) = workload["template"]["containers"]
    return dict(found)


# ApiService


def test_the_api_runs_the_image_by_digest_as_its_account_with_secrets_by_reference(declare: Declare):
    declared = api(declare, api_args(labels={"app": "liftoff"}))
    assert declared.child_names("liftoff:index:ApiService") == {"api-service"}
    service = declared.one(SERVICE, "api-service")
    assert {
        k: service.inputs[k] for k in ("name", "location", "project", "ingress", "deletionProtection")
    } == {
        "name": "liftoff-prod-api",
        "location": "europe-west1",
        "project": "acme-prod",
        "ingress": "INGRESS_TRAFFIC_ALL",
        "deletionProtection": True,
    }
    template = service.inputs["template"]
    assert template["serviceAccount"] == API_ACCOUNT
    assert template["labels"] == service.inputs["labels"] == {"app": "liftoff"}
    assert template["scaling"] == {"minInstanceCount": 0, "maxInstanceCount": 10}
    assert template["maxInstanceRequestConcurrency"] == 80
    assert template["timeout"] == "300s"
    main = only_container(service.inputs)
    assert main["image"] == IMAGE
    assert main["args"] == ["python", "-m", "app", "api"]
    assert main["ports"] == {"containerPort": 8080}
    assert main["envs"] == ENVS, "plain variables sorted, then secrets as pinned Secret Manager versions"
    assert main["resources"] == {
        "limits": {"cpu": "1", "memory": "512Mi"},
        "cpuIdle": True,
        "startupCpuBoost": True,
    }
    assert "customAudiences" not in service.inputs


def test_the_api_probes_its_own_health_not_its_dependencies(declare: Declare):
    main = only_container(api(declare, api_args()).one(SERVICE).inputs)
    assert main["startupProbe"] == {
        "httpGet": {"path": "/health"},
        "initialDelaySeconds": 0,
        "periodSeconds": 3,
        "timeoutSeconds": 2,
        "failureThreshold": 20,
    }
    assert main["livenessProbe"] == {
        "httpGet": {"path": "/health"},
        "periodSeconds": 15,
        "timeoutSeconds": 3,
        "failureThreshold": 3,
    }


def test_the_revision_is_named_from_digest_and_template_and_takes_the_traffic(declare: Declare):
    declared = api(declare, api_args())
    service = declared.one(SERVICE)
    revision = declared.outputs["revision"]
    assert revision.startswith("liftoff-prod-api-abababab-")
    assert service.inputs["template"]["revision"] == revision
    assert service.inputs["traffics"] == [{"type": "TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST", "percent": 100}]
    assert service.ignore_changes == frozenset()
    assert declared.outputs["serving"] == {revision: 100}
    assert declared.outputs["url"] == service.outputs["uri"]


def test_a_template_change_renames_the_revision_but_a_traffic_change_does_not(declare: Declare):
    pinned = (
        TrafficTarget(percent=90, revision="liftoff-prod-api-aaaa"),
        TrafficTarget(percent=10, tag="next"),
    )

    def program() -> dict[str, Any]:
        return {
            "base": ApiService("base", api_args()).revision,
            "split": ApiService("split", api_args(traffic=pinned)).revision,
            "env": ApiService("env", api_args(container=container(env={"APP_ENV": "prod"}))).revision,
            "cpu": ApiService("cpu", api_args(container=container(cpu="2"))).revision,
            "scaling": ApiService("scaling", api_args(max_instances=20)).revision,
        }

    revisions = declare(program).outputs
    assert revisions["split"] == revisions["base"]
    assert len({revisions[k] for k in ("base", "env", "cpu", "scaling")}) == 4


def test_a_declared_split_pins_revisions_by_name_and_tags_them(declare: Declare):
    targets = (
        TrafficTarget(percent=90, revision="liftoff-prod-api-stable1", tag="stable"),
        TrafficTarget(percent=10, tag="candidate"),
    )
    service = api(declare, api_args(traffic=targets)).one(SERVICE)
    assert service.inputs["traffics"] == [
        {
            "type": "TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION",
            "revision": "liftoff-prod-api-stable1",
            "percent": 90,
            "tag": "stable",
        },
        {"type": "TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST", "percent": 10, "tag": "candidate"},
    ]


def test_release_managed_traffic_is_written_once_and_then_left_to_releases(declare: Declare):
    service = api(declare, api_args(traffic=None)).one(SERVICE)
    assert service.inputs["traffics"] == [
        {"type": "TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST", "percent": 100, "tag": "candidate"}
    ]
    assert service.ignore_changes == {"traffics"}


def test_a_traffic_only_update_changes_the_traffic_and_nothing_else(declare: Declare):
    def program() -> dict[str, Any]:
        account = gcp.serviceaccount.Account("migrations", account_id="liftoff-prod-migrate")
        pinned = (TrafficTarget(percent=100, revision="liftoff-prod-api-stable1"),)
        ApiService("api", api_args(container=container(after=(account,)), traffic=pinned, traffic_only=True))
        WorkerPool("worker", pool_args(container=container(after=(account,)), traffic_only=True))
        return {}

    declared = declare(program)
    service, workers = declared.one(SERVICE), declared.one(POOL)
    assert set(service.inputs) - service.ignore_changes == {"traffics"}
    assert set(workers.inputs) - workers.ignore_changes == {"instanceSplits"}
    # A targeted rollback must not wait for prerequisites of a new revision it does not create.
    assert service.dependencies == workers.dependencies == frozenset()


def test_a_private_api_is_invoked_only_by_the_named_members(declare: Declare):
    members = ("serviceAccount:smoke@acme-prod.iam.gserviceaccount.com", "group:team@example.com")
    declared = api(declare, api_args(invokers=members))
    invokers = {r.name: r for r in declared.of_type(INVOKER)}
    assert set(invokers) == {"api-invoker-0", "api-invoker-1"}
    assert declared.child_names("liftoff:index:ApiService") == {
        "api-service",
        "api-invoker-0",
        "api-invoker-1",
    }
    for index, member in enumerate(members):
        assert invokers[f"api-invoker-{index}"].inputs == {
            "name": "liftoff-prod-api",
            "location": "europe-west1",
            "project": "acme-prod",
            "role": "roles/run.invoker",
            "member": member,
        }
        assert declared.one(SERVICE).urn in invokers[f"api-invoker-{index}"].dependencies


def test_nobody_may_invoke_a_private_api_by_default_and_everyone_a_public_one(declare: Declare):
    def program() -> dict[str, Any]:
        ApiService("private", api_args())
        ApiService("public", api_args(service_name="liftoff-prod-public", public=True))
        return {}

    invokers = declare(program).of_type(INVOKER)
    assert [(r.name, r.inputs["member"]) for r in invokers] == [("public-invoker-0", "allUsers")]


def test_an_audience_is_accepted_on_every_url(declare: Declare):
    service = api(declare, api_args(audience="https://api.liftoff.example")).one(SERVICE)
    assert service.inputs["customAudiences"] == ["https://api.liftoff.example"]


def test_the_workload_waits_for_its_prerequisites_and_secret_grants(declare: Declare):
    def program() -> dict[str, Any]:
        account = gcp.serviceaccount.Account("migrations", account_id="liftoff-prod-migrate")
        grant = gcp.serviceaccount.Account("grant-stand-in", account_id="liftoff-prod-grant")
        args = api_args(
            container=container(after=(account,), secret_env={"DATABASE_URL": database_url((grant,))})
        )
        ApiService("api", args)
        return {}

    declared = declare(program)
    after = {declared.one(ACCOUNT, "migrations").urn, declared.one(ACCOUNT, "grant-stand-in").urn}
    assert after <= declared.one(SERVICE).dependencies


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        pytest.param({"min_instances": -1}, "min_instances"),
        pytest.param({"min_instances": 3, "max_instances": 2}, "min_instances"),
        pytest.param({"max_instances": 0}, "max_instances"),
        ({"concurrency": 0}, "concurrency"),
        ({"concurrency": 1001}, "concurrency"),
        ({"timeout_seconds": 0}, "timeout_seconds"),
        ({"timeout_seconds": 3601}, "timeout_seconds"),
        ({"ingress": "INGRESS_TRAFFIC_EVERYWHERE"}, "ingress"),
        pytest.param({"public": True, "invokers": ("allUsers",)}, "invokers"),
        ({"traffic": (TrafficTarget(percent=90),)}, "traffic"),
        ({"traffic": None, "traffic_only": True}, "traffic_only"),
    ],
)
def test_bad_api_args_name_the_field(overrides, field):
    with pytest.raises(ValueError, match=field):
        api_args(**overrides)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"cpu": "0"}, "cpu"),
        ({"cpu": "1.5"}, "cpu"),
        ({"cpu": "50m"}, "cpu"),
        ({"memory": "512M"}, "memory"),
        ({"memory": "0Gi"}, "memory"),
        pytest.param({"env": {"DATABASE_URL": "plain"}}, "secret_env"),
        pytest.param({"env": {"PORT": "9000"}}, "env"),
    ],
)
def test_bad_container_args_name_the_field(overrides, field):
    with pytest.raises(ValueError, match=field):
        container(**overrides)


def test_cpu_and_memory_take_cloud_runs_units():
    assert container(cpu="500m", memory="2Gi").cpu == "500m"
    assert container(cpu="8", memory="32768Mi").memory == "32768Mi"


# WorkerPool


def pool(declare: Declare, args: WorkerPoolArgs) -> Declared:
    def program() -> dict[str, Any]:
        workers = WorkerPool("worker", args)
        return {"revision": workers.revision, "serving": workers.serving}

    return declare(program)


def test_the_pool_runs_a_fixed_number_of_workers_that_expose_nothing(declare: Declare):
    declared = pool(declare, pool_args(instances=3, labels={"app": "liftoff"}))
    assert declared.child_names("liftoff:index:WorkerPool") == {"worker-pool"}
    workers = declared.one(POOL, "worker-pool")
    assert workers.inputs["name"] == "liftoff-prod-worker"
    assert workers.inputs["deletionProtection"] is True
    assert workers.inputs["scaling"] == {"scalingMode": "MANUAL", "manualInstanceCount": 3}
    assert workers.inputs["labels"] == workers.inputs["template"]["labels"] == {"app": "liftoff"}
    main = only_container(workers.inputs)
    assert main["args"] == ["python", "-m", "app", "worker"]
    assert main["envs"] == ENVS
    assert "ports" not in main and "ingress" not in workers.inputs
    assert main["livenessProbe"] == {
        "httpGet": {"path": "/health", "port": 8080},
        "periodSeconds": 30,
        "timeoutSeconds": 5,
        "failureThreshold": 3,
    }
    assert declared.of_type(INVOKER) == []


def test_the_pools_split_and_its_revision(declare: Declare):
    declared = pool(declare, pool_args())
    workers = declared.one(POOL)
    revision = declared.outputs["revision"]
    assert revision.startswith("liftoff-prod-worker-abababab-")
    assert workers.inputs["template"]["revision"] == revision
    assert workers.inputs["instanceSplits"] == [
        {"type": "INSTANCE_SPLIT_ALLOCATION_TYPE_LATEST", "percent": 100}
    ]
    assert declared.outputs["serving"] == {revision: 100}


def test_scaling_the_pool_keeps_its_revision(declare: Declare):
    def program() -> dict[str, Any]:
        return {
            "one": WorkerPool("one", pool_args(instances=1)).revision,
            "five": WorkerPool("five", pool_args(instances=5)).revision,
        }

    revisions = declare(program).outputs
    assert revisions["one"] == revisions["five"]


def test_a_release_managed_split_is_left_to_releases(declare: Declare):
    workers = pool(declare, pool_args(split=None)).one(POOL)
    assert workers.inputs["instanceSplits"] == [
        {"type": "INSTANCE_SPLIT_ALLOCATION_TYPE_LATEST", "percent": 100}
    ]
    assert workers.ignore_changes == {"instanceSplits"}


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"instances": -1}, "instances"),
        ({"instances": 101}, "instances"),
        ({"split": (TrafficTarget(percent=100, tag="candidate"),)}, "split"),
        ({"split": (TrafficTarget(percent=50),)}, "split"),
    ],
)
def test_bad_pool_args_name_the_field(overrides, field):
    with pytest.raises(ValueError, match=field):
        pool_args(**overrides)


# MigrationsJob


def test_migrations_run_once_per_trigger_and_wait_for_success(declare: Declare):
    def program() -> dict[str, Any]:
        migrations = MigrationsJob("migrate", job_args(run_on=DIGEST, max_retries=2, timeout_seconds=300))
        return {"job_name": migrations.job_name, "execution": migrations.execution}

    declared = declare(program)
    assert declared.child_names("liftoff:index:MigrationsJob") == {"migrate-job", "migrate-run"}
    job = declared.one(JOB, "migrate-job")
    assert job.inputs["name"] == "liftoff-prod-migrate"
    assert job.inputs["deletionProtection"] is True
    task = job.inputs["template"]
    assert task["taskCount"] == 1
    assert task["template"]["serviceAccount"] == API_ACCOUNT
    assert task["template"]["maxRetries"] == 2
    assert task["template"]["timeout"] == "300s"
    main = only_container(task)
    assert main["args"] == ["python", "-m", "app", "migrate"]
    assert main["envs"] == ENVS
    assert main["resources"] == {"limits": {"cpu": "1", "memory": "512Mi"}}
    run = declared.one(JobRun.TYPE, "migrate-run")
    assert run.inputs == {
        "job": "projects/acme-prod/locations/europe-west1/jobs/liftoff-prod-migrate",
        "trigger": DIGEST,
        "timeout_seconds": 900,
    }
    assert job.urn in run.dependencies
    assert declared.outputs["job_name"] == "liftoff-prod-migrate"
    assert declared.outputs["execution"] == run.outputs["execution"]


def test_migrations_need_a_trigger(declare: Declare, mocks: ComponentMocks):
    with pytest.raises(ValueError, match="run_on"):
        declare(lambda: {"job": MigrationsJob("migrate", job_args()).job_name})
    assert [r.type for r in mocks.resources if r.type != "liftoff:index:MigrationsJob"] == []


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"command": ()}, "command"),
        ({"timeout_seconds": 0}, "timeout_seconds"),
        ({"timeout_seconds": 86_401}, "timeout_seconds"),
    ],
)
def test_bad_job_args_name_the_field(overrides, field):
    with pytest.raises(ValueError, match=field):
        job_args(**overrides)


# RetentionJob


def test_retention_runs_on_schedule_as_the_scheduler_account(declare: Declare):
    args = RetentionJobArgs(
        job=job_args(job_name="liftoff-prod-retention", command=("python", "-m", "app", "retention")),
        schedule="5 4 * * 1",
        time_zone="Europe/Paris",
        scheduler_account=SCHEDULER,
    )
    declared = declare(lambda: {"job_name": RetentionJob("retention", args).job_name})
    assert declared.child_names("liftoff:index:RetentionJob") == {
        "retention-job",
        "retention-scheduler-invoker",
        "retention-schedule",
    }
    job = declared.one(JOB, "retention-job")
    assert only_container(job.inputs["template"])["args"] == ["python", "-m", "app", "retention"]
    assert declared.one(JOB_INVOKER).inputs == {
        "name": "liftoff-prod-retention",
        "location": "europe-west1",
        "project": "acme-prod",
        "role": "roles/run.invoker",
        "member": f"serviceAccount:{SCHEDULER}",
    }
    assert declared.one(SCHEDULE).inputs == {
        "name": "liftoff-prod-retention-schedule",
        "region": "europe-west1",
        "project": "acme-prod",
        "schedule": "5 4 * * 1",
        "timeZone": "Europe/Paris",
        "attemptDeadline": "320s",
        "retryConfig": {"retryCount": 1},
        "httpTarget": {
            "httpMethod": "POST",
            "uri": "https://run.googleapis.com/v2/projects/acme-prod/locations/europe-west1/jobs/"
            "liftoff-prod-retention:run",
            "oauthToken": {
                "serviceAccountEmail": SCHEDULER,
                "scope": "https://www.googleapis.com/auth/cloud-platform",
            },
        },
    }
    assert job.urn in declared.one(SCHEDULE).dependencies
    assert declared.outputs["job_name"] == "liftoff-prod-retention"


@pytest.mark.parametrize("schedule", ["daily", "17 3 * *", "0 0 * * * *"])
def test_a_schedule_that_is_not_five_cron_fields_is_named(schedule):
    with pytest.raises(ValueError, match="schedule"):
        RetentionJobArgs(job=job_args(), schedule=schedule)
