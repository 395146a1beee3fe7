"""Cloud Run workloads: the API service, the worker pool, and the migrations and retention jobs.

Every workload runs the image by digest, as its own service account, and reads secrets only
as Secret Manager references, never as plain values.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pulumi
import pulumi_gcp as gcp
from pulumi_gcp import cloudrunv2 as run

from components.secrets import SecretRef
from components.traffic import LATEST, TrafficTarget, revision_name, validate

CPU = re.compile(r"^(?:[1-8]|[1-9][0-9]{2,3}m)$")
MEMORY = re.compile(r"^[1-9][0-9]*(?:Mi|Gi)$")
INGRESS = frozenset(
    {"INGRESS_TRAFFIC_ALL", "INGRESS_TRAFFIC_INTERNAL_ONLY", "INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER"}
)
CONTAINER_PORT = 8080


@dataclass(frozen=True)
class Container:
    """What every workload's container has: the image by digest, its identity, its settings."""

    image: pulumi.Input[str]
    image_digest: pulumi.Input[str]
    service_account: pulumi.Input[str]
    env: Mapping[str, pulumi.Input[str]] = field(default_factory=dict)
    secret_env: Mapping[str, SecretRef] = field(default_factory=dict)
    cpu: str = "1"
    memory: str = "512Mi"

    def __post_init__(self) -> None:
        if not CPU.match(self.cpu):
            raise ValueError(f"cpu {self.cpu!r} is not a Cloud Run CPU value (1-8, or millicores like 500m)")
        if not MEMORY.match(self.memory):
            raise ValueError(f"memory {self.memory!r} is not a size like 512Mi or 2Gi")
        both = set(self.env) & set(self.secret_env)
        if both:
            raise ValueError(f"variables both plain and secret: {sorted(both)}")
        if "PORT" in self.env:
            raise ValueError("PORT is set by Cloud Run and may not be overridden")

    def fingerprint(self) -> pulumi.Output[dict[str, Any]]:
        """Everything that makes a revision what it is, resolved (secret refs, never values)."""
        secrets = {k: pulumi.Output.all(r.secret, r.version) for k, r in self.secret_env.items()}
        return pulumi.Output.all(
            image=self.image,
            account=self.service_account,
            env=pulumi.Output.all(**dict(self.env)) if self.env else {},
            secrets=pulumi.Output.all(**secrets) if secrets else {},
            cpu=self.cpu,
            memory=self.memory,
        )


def _limits(container: Container) -> dict[str, str]:
    return {"cpu": container.cpu, "memory": container.memory}


E = TypeVar("E")


def _envs(
    c: Container, env: Callable[..., E], source: Callable[..., Any], ref: Callable[..., Any]
) -> list[E]:
    """The container's variables, plain ones as values and secrets as Secret Manager references.

    Each resource type has its own Args classes for the same shape; they are passed in.
    """
    plain = [env(name=k, value=v) for k, v in sorted(c.env.items())]
    secret = [
        env(name=k, value_source=source(secret_key_ref=ref(secret=r.secret, version=r.version)))
        for k, r in sorted(c.secret_env.items())
    ]
    return plain + secret


def _service_envs(c: Container) -> list[run.ServiceTemplateContainerEnvArgs]:
    return _envs(
        c,
        run.ServiceTemplateContainerEnvArgs,
        run.ServiceTemplateContainerEnvValueSourceArgs,
        run.ServiceTemplateContainerEnvValueSourceSecretKeyRefArgs,
    )


def _pool_envs(c: Container) -> list[run.WorkerPoolTemplateContainerEnvArgs]:
    return _envs(
        c,
        run.WorkerPoolTemplateContainerEnvArgs,
        run.WorkerPoolTemplateContainerEnvValueSourceArgs,
        run.WorkerPoolTemplateContainerEnvValueSourceSecretKeyRefArgs,
    )


def _job_envs(c: Container) -> list[run.JobTemplateTemplateContainerEnvArgs]:
    return _envs(
        c,
        run.JobTemplateTemplateContainerEnvArgs,
        run.JobTemplateTemplateContainerEnvValueSourceArgs,
        run.JobTemplateTemplateContainerEnvValueSourceSecretKeyRefArgs,
    )


def _revision(service: str, container: Container, extra: Mapping[str, Any]) -> pulumi.Output[str]:
    return pulumi.Output.all(container.image_digest, container.fingerprint()).apply(
        lambda v: revision_name(service, v[0], {**v[1], **extra})
    )


@dataclass(frozen=True)
class ApiServiceArgs:
    """The API: scaling, limits, exposure and traffic of one Cloud Run service."""

    service_name: str
    region: str
    project: str
    container: Container
    min_instances: int = 0
    max_instances: int = 10
    concurrency: int = 80
    timeout_seconds: int = 300
    ingress: str = "INGRESS_TRAFFIC_ALL"
    # Secure defaults: invokers must be named, and the service cannot be deleted by accident.
    public: bool = False
    invokers: tuple[str, ...] = ()
    deletion_protection: bool = True
    traffic: tuple[TrafficTarget, ...] = (TrafficTarget(percent=100),)
    labels: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0 <= self.min_instances <= self.max_instances or self.max_instances < 1:
            raise ValueError("instances: need 0 <= min <= max and max >= 1")
        if not 1 <= self.concurrency <= 1000:
            raise ValueError("concurrency must be from 1 to 1000")
        if not 1 <= self.timeout_seconds <= 3600:
            raise ValueError("timeout_seconds must be from 1 to 3600")
        if self.ingress not in INGRESS:
            raise ValueError(f"ingress {self.ingress!r} is not one of {sorted(INGRESS)}")
        if self.public and self.invokers:
            raise ValueError("a public service takes no invoker list")
        validate(self.traffic, key="traffic", service=self.service_name)


class ApiService(pulumi.ComponentResource):
    """A Cloud Run service whose revisions are named from the image digest and the template."""

    url: pulumi.Output[str]
    revision: pulumi.Output[str]
    service_name: pulumi.Output[str]

    def __init__(self, name: str, args: ApiServiceArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("liftoff:index:ApiService", name, None, opts)
        c = args.container
        shape = {
            "min": args.min_instances,
            "max": args.max_instances,
            "concurrency": args.concurrency,
            "timeout": args.timeout_seconds,
        }
        self.revision = _revision(args.service_name, c, shape)
        traffic = [
            run.ServiceTrafficArgs(
                type="TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST"
                if t.revision == LATEST
                else "TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION",
                revision=None if t.revision == LATEST else t.revision,
                percent=t.percent,
                tag=t.tag,
            )
            for t in args.traffic
        ]
        service = run.Service(
            f"{name}-service",
            run.ServiceArgs(
                name=args.service_name,
                location=args.region,
                project=args.project,
                ingress=args.ingress,
                deletion_protection=args.deletion_protection,
                labels=dict(args.labels),
                template=run.ServiceTemplateArgs(
                    revision=self.revision,
                    service_account=c.service_account,
                    max_instance_request_concurrency=args.concurrency,
                    timeout=f"{args.timeout_seconds}s",
                    labels=dict(args.labels),
                    scaling=run.ServiceTemplateScalingArgs(
                        min_instance_count=args.min_instances, max_instance_count=args.max_instances
                    ),
                    containers=[
                        run.ServiceTemplateContainerArgs(
                            image=c.image,
                            args=["python", "-m", "app", "api"],
                            ports=run.ServiceTemplateContainerPortsArgs(container_port=CONTAINER_PORT),
                            envs=_service_envs(c),
                            resources=run.ServiceTemplateContainerResourcesArgs(
                                limits=_limits(c), cpu_idle=True, startup_cpu_boost=True
                            ),
                            # Traffic only once Postgres and Redis answer; restarts only if the process hangs.
                            startup_probe=run.ServiceTemplateContainerStartupProbeArgs(
                                http_get=run.ServiceTemplateContainerStartupProbeHttpGetArgs(path="/ready"),
                                initial_delay_seconds=0,
                                period_seconds=3,
                                timeout_seconds=2,
                                failure_threshold=20,
                            ),
                            liveness_probe=run.ServiceTemplateContainerLivenessProbeArgs(
                                http_get=run.ServiceTemplateContainerLivenessProbeHttpGetArgs(path="/health"),
                                period_seconds=15,
                                timeout_seconds=3,
                                failure_threshold=3,
                            ),
                        )
                    ],
                ),
                traffics=traffic,
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )
        if args.public:
            members: tuple[str, ...] = ("allUsers",)
        else:
            members = args.invokers
        for index, member in enumerate(members):
            run.ServiceIamMember(
                f"{name}-invoker-{index}",
                run.ServiceIamMemberArgs(
                    name=service.name,
                    location=args.region,
                    project=args.project,
                    role="roles/run.invoker",
                    member=member,
                ),
                opts=pulumi.ResourceOptions(parent=self),
            )
        self.url = service.uri
        self.service_name = service.name
        self.register_outputs({"url": self.url, "revision": self.revision})


@dataclass(frozen=True)
class WorkerPoolArgs:
    """The worker: a Cloud Run worker pool, no endpoint, a fixed instance count."""

    pool_name: str
    region: str
    project: str
    container: Container
    instances: int = 1
    split: tuple[TrafficTarget, ...] = (TrafficTarget(percent=100),)
    deletion_protection: bool = True
    labels: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0 <= self.instances <= 100:
            raise ValueError("instances must be from 0 to 100")
        if any(t.tag for t in self.split):
            raise ValueError("worker instance splits take no tags")
        validate(self.split, key="split", service=self.pool_name)


class WorkerPool(pulumi.ComponentResource):
    """Workers pull their jobs: nothing reaches them, so they expose nothing."""

    revision: pulumi.Output[str]

    def __init__(self, name: str, args: WorkerPoolArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("liftoff:index:WorkerPool", name, None, opts)
        c = args.container
        self.revision = _revision(args.pool_name, c, {"instances": args.instances})
        run.WorkerPool(
            f"{name}-pool",
            run.WorkerPoolArgs(
                name=args.pool_name,
                location=args.region,
                project=args.project,
                deletion_protection=args.deletion_protection,
                labels=dict(args.labels),
                scaling=run.WorkerPoolScalingArgs(
                    scaling_mode="MANUAL", manual_instance_count=args.instances
                ),
                instance_splits=[
                    run.WorkerPoolInstanceSplitArgs(
                        type="INSTANCE_SPLIT_ALLOCATION_TYPE_LATEST"
                        if t.revision == LATEST
                        else "INSTANCE_SPLIT_ALLOCATION_TYPE_REVISION",
                        revision=None if t.revision == LATEST else t.revision,
                        percent=t.percent,
                    )
                    for t in args.split
                ],
                template=run.WorkerPoolTemplateArgs(
                    revision=self.revision,
                    service_account=c.service_account,
                    labels=dict(args.labels),
                    containers=[
                        run.WorkerPoolTemplateContainerArgs(
                            image=c.image,
                            args=["python", "-m", "app", "worker"],
                            envs=_pool_envs(c),
                            resources=run.WorkerPoolTemplateContainerResourcesArgs(limits=_limits(c)),
                            liveness_probe=run.WorkerPoolTemplateContainerLivenessProbeArgs(
                                http_get=run.WorkerPoolTemplateContainerLivenessProbeHttpGetArgs(
                                    path="/health", port=CONTAINER_PORT
                                ),
                                period_seconds=30,
                                timeout_seconds=5,
                                failure_threshold=3,
                            ),
                        )
                    ],
                ),
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.register_outputs({"revision": self.revision})


@dataclass(frozen=True)
class JobArgs:
    """A Cloud Run job running one app command."""

    job_name: str
    region: str
    project: str
    container: Container
    command: tuple[str, ...]
    timeout_seconds: int = 600
    max_retries: int = 0
    # With a token, every new token runs the job once and the update waits for it to succeed.
    run_on: pulumi.Input[str] | None = None
    deletion_protection: bool = True
    labels: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.command:
            raise ValueError("a job needs a command")
        if not 1 <= self.timeout_seconds <= 86_400:
            raise ValueError("timeout_seconds must be from 1 to 86400")


def _job(name: str, args: JobArgs, parent: pulumi.Resource) -> run.Job:
    c = args.container
    return run.Job(
        name,
        run.JobArgs(
            name=args.job_name,
            location=args.region,
            project=args.project,
            deletion_protection=args.deletion_protection,
            labels=dict(args.labels),
            run_execution_token=args.run_on,
            template=run.JobTemplateArgs(
                task_count=1,
                labels=dict(args.labels),
                template=run.JobTemplateTemplateArgs(
                    service_account=c.service_account,
                    max_retries=args.max_retries,
                    timeout=f"{args.timeout_seconds}s",
                    containers=[
                        run.JobTemplateTemplateContainerArgs(
                            image=c.image,
                            args=list(args.command),
                            envs=_job_envs(c),
                            resources=run.JobTemplateTemplateContainerResourcesArgs(limits=_limits(c)),
                        )
                    ],
                ),
            ),
        ),
        opts=pulumi.ResourceOptions(parent=parent),
    )


def execution_token(image_digest: pulumi.Input[str]) -> pulumi.Output[str]:
    """A short token per image: a new image runs the job again, the same image does not."""
    return pulumi.Output.from_input(image_digest).apply(lambda d: "img-" + d.removeprefix("sha256:")[:12])


class MigrationsJob(pulumi.ComponentResource):
    """`alembic upgrade head`, run to completion on every new image, before the API changes.

    The job's `run_execution_token` comes from the image digest, so the update that ships a new
    image starts one execution and waits for it to succeed. The API service depends on this
    resource, so its new revision is only created (and only takes traffic) after the schema is
    migrated. A failed migration fails the update and leaves the API as it was.
    """

    job: run.Job
    job_name: pulumi.Output[str]

    def __init__(self, name: str, args: JobArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("liftoff:index:MigrationsJob", name, None, opts)
        if args.run_on is None:
            raise ValueError("migrations need run_on (a token per image)")
        self.job = _job(f"{name}-job", args, self)
        self.job_name = self.job.name
        self.register_outputs({"job_name": self.job_name})


@dataclass(frozen=True)
class RetentionJobArgs:
    """The cleanup job and when Cloud Scheduler runs it."""

    job: JobArgs
    schedule: str = "17 3 * * *"
    time_zone: str = "Etc/UTC"
    scheduler_account: pulumi.Input[str] = ""

    def __post_init__(self) -> None:
        if len(self.schedule.split()) != 5:
            raise ValueError(f"schedule {self.schedule!r} is not a 5-field cron expression")


class RetentionJob(pulumi.ComponentResource):
    """Deletes old generation_logs on a schedule: Cloud Scheduler runs a Cloud Run job."""

    job_name: pulumi.Output[str]

    def __init__(self, name: str, args: RetentionJobArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("liftoff:index:RetentionJob", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        job = _job(f"{name}-job", args.job, self)
        run.JobIamMember(
            f"{name}-scheduler-invoker",
            run.JobIamMemberArgs(
                name=job.name,
                location=args.job.region,
                project=args.job.project,
                role="roles/run.invoker",
                member=pulumi.Output.concat("serviceAccount:", args.scheduler_account),
            ),
            opts=child,
        )
        gcp.cloudscheduler.Job(
            f"{name}-schedule",
            gcp.cloudscheduler.JobArgs(
                name=pulumi.Output.concat(job.name, "-schedule"),
                region=args.job.region,
                project=args.job.project,
                schedule=args.schedule,
                time_zone=args.time_zone,
                attempt_deadline="320s",
                retry_config=gcp.cloudscheduler.JobRetryConfigArgs(retry_count=1),
                http_target=gcp.cloudscheduler.JobHttpTargetArgs(
                    http_method="POST",
                    uri=pulumi.Output.format(
                        "https://run.googleapis.com/v2/projects/{0}/locations/{1}/jobs/{2}:run",
                        args.job.project,
                        args.job.region,
                        job.name,
                    ),
                    oauth_token=gcp.cloudscheduler.JobHttpTargetOauthTokenArgs(
                        service_account_email=args.scheduler_account,
                        scope="https://www.googleapis.com/auth/cloud-platform",
                    ),
                ),
            ),
            opts=child,
        )
        self.job_name = job.name
        self.register_outputs({"job_name": self.job_name})
