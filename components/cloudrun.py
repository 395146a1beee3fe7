"""Cloud Run workloads: the API service, the worker pool, and the migrations and retention jobs.

Every workload runs the image by digest, as its own service account, and reads secrets only
as Secret Manager references, never as plain values.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pulumi
import pulumi_gcp as gcp
from pulumi_gcp import cloudrunv2 as run

from components.jobrun import JobRun, JobRunProvider
from components.rules import (
    CloudRunIngress,
    Concurrency,
    Cpu,
    Cron,
    JobTimeoutSeconds,
    MaxInstances,
    Memory,
    MinInstances,
    PoolInstances,
    RequestTimeoutSeconds,
    check,
    instances_in_order,
    public_takes_no_invokers,
    refuse,
)
from components.secrets import SecretRef
from components.traffic import TrafficTarget, revision_name, validate

CONTAINER_PORT = 8080


@dataclass(frozen=True)
class Container:
    """What every workload's container has: the image by digest, its identity, its settings.

    `after` lists what the workload must wait for (the migrations run, say). A component's own
    `depends_on` does not reach its children in the engine, so each child is given it explicitly,
    together with the accessor grants of every secret it mounts.
    """

    image: pulumi.Input[str]
    image_digest: pulumi.Input[str]
    service_account: pulumi.Input[str]
    env: Mapping[str, pulumi.Input[str]] = field(default_factory=dict)
    secret_env: Mapping[str, SecretRef] = field(default_factory=dict)
    cpu: str = "1"
    memory: str = "512Mi"
    after: tuple[pulumi.Resource, ...] = ()

    def __post_init__(self) -> None:
        check(self, cpu=Cpu, memory=Memory)
        both = set(self.env) & set(self.secret_env)
        if both:
            raise ValueError(f"secret_env: variables both plain and secret: {sorted(both)}")
        if "PORT" in self.env:
            raise ValueError("env: PORT is set by Cloud Run and may not be overridden")

    def options(self, parent: pulumi.Resource) -> pulumi.ResourceOptions:
        """The workload's options: a child of its component, after its prerequisites and grants."""
        grants = [grant for _, ref in sorted(self.secret_env.items()) for grant in ref.grants]
        return pulumi.ResourceOptions(parent=parent, depends_on=[*self.after, *grants])


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


def service_envs(c: Container) -> list[run.ServiceTemplateContainerEnvArgs]:
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


def plain(value: Any) -> Any:
    """A resolved input as plain data: input types by their properties, None-valued ones left out."""
    if value is None or isinstance(value, str | int | float):  # enums are str subclasses too
        return value
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if hasattr(value, "__dict__") and not isinstance(value, type):
        # Pulumi input types keep their properties in __dict__ (see pulumi.Output.from_input).
        return plain(vars(value))
    return value


def revision_of(service: str, image_digest: pulumi.Input[str], template: Any) -> pulumi.Output[str]:
    """The revision name for a template (given without its name): any change anywhere renames it.

    Cloud Run answers 409 when a revision name is reused with a different template, and a name
    is all a traffic split can pin, so the name covers the whole template: image, probes, ports,
    args, env, resources, scaling, labels. Fields outside the template (a worker pool's manual
    instance count, the traffic split) do not rename it, so scaling never restarts the workers.
    """
    resolved = pulumi.Output.all(pulumi.Output.from_input(template), image_digest)
    return resolved.apply(lambda v: revision_name(service, v[1], plain(v[0])))


def serving(statuses: Any, latest_ready: str | None) -> dict[str, int]:
    """Revision name -> percent, from a service's traffic statuses or a pool's split statuses.

    The statuses are what the control plane observes, not what was last declared: after a failed
    update or a rollback the newest revision may serve nothing. A LATEST entry that names no
    revision is the latest ready one. Names are given short (a full resource name's last part).
    """
    found: dict[str, int] = {}
    for status in plain(statuses) or []:
        revision = status.get("revision") or (latest_ready if "LATEST" in str(status.get("type")) else None)
        percent = int(status.get("percent") or 0)
        if revision and percent > 0:
            short = str(revision).rsplit("/", 1)[-1]
            found[short] = found.get(short, 0) + percent
    return found


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
    # None: releases manage the traffic (see RELEASE_MANAGED); a plain update never moves it.
    traffic: tuple[TrafficTarget, ...] | None = (TrafficTarget(percent=100),)
    # Only the traffic may change in this update: every other input keeps its recorded value.
    traffic_only: bool = False
    labels: Mapping[str, str] = field(default_factory=dict)
    # An ID token audience every URL of the service accepts, tag URLs included: a private API's
    # smoke test of its candidate needs one (https://cloud.google.com/run/docs/configuring/custom-audiences).
    audience: str | None = None

    def __post_init__(self) -> None:
        check(
            self,
            min_instances=MinInstances,
            max_instances=MaxInstances,
            concurrency=Concurrency,
            timeout_seconds=RequestTimeoutSeconds,
            ingress=CloudRunIngress,
        )
        refuse("min_instances", instances_in_order(self.min_instances, self.max_instances))
        refuse("invokers", public_takes_no_invokers(self.public, self.invokers))
        _check_release_targets(self.traffic, self.traffic_only, key="traffic", service=self.service_name)


def _check_release_targets(
    targets: tuple[TrafficTarget, ...] | None, traffic_only: bool, *, key: str, service: str
) -> None:
    """Declared targets follow Cloud Run's rules; undeclared ones (release-managed) cannot be moved."""
    if targets is None and traffic_only:
        raise ValueError(f"traffic_only: a traffic-only update must declare the {key}")
    if targets is not None:
        validate(targets, key=key, service=service)


def _service_template(args: ApiServiceArgs, revision: pulumi.Input[str] | None) -> run.ServiceTemplateArgs:
    c = args.container
    return run.ServiceTemplateArgs(
        revision=revision,
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
                envs=service_envs(c),
                resources=run.ServiceTemplateContainerResourcesArgs(
                    limits=_limits(c), cpu_idle=True, startup_cpu_boost=True
                ),
                # The process, not its dependencies: an Upstash budget stop or a Supabase blip must
                # not keep new instances from starting (and a scale-out from serving what it can).
                # Dependencies are checked by the smoke test on /ready before traffic moves.
                startup_probe=run.ServiceTemplateContainerStartupProbeArgs(
                    http_get=run.ServiceTemplateContainerStartupProbeHttpGetArgs(path="/health"),
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
    )


def _release_options(
    base: pulumi.ResourceOptions, args_type: type, moving: str, declared: bool, traffic_only: bool
) -> pulumi.ResourceOptions:
    """The workload's options under release management.

    Undeclared traffic (`declared` False) is written once, at creation, and ignored afterwards: a
    plain update then only adds the new revision, which takes no traffic while releases pin it by
    name. A traffic-only update ignores every input but `moving`, so whatever the checkout holds
    (another image, other settings) changes nothing else and creates no revision. The engine keeps
    the recorded value of each ignored input (https://www.pulumi.com/docs/iac/concepts/options/ignorechanges/);
    names are the SDK's Python names, which the SDK translates to the engine's through the Args
    type's metadata (pulumi/runtime/resource.py, _translate_ignore_changes).
    """
    if traffic_only:
        ignored = [name for name in _input_names(args_type) if name != moving]
        # No depends_on either: what the workload waits for before a new revision (migrations,
        # secret grants) does not matter to a traffic move, and a checkout that adds such a
        # prerequisite must not make a targeted rollback depend on a resource it does not run.
        return pulumi.ResourceOptions(parent=base.parent, ignore_changes=ignored)
    if not declared:
        ignored = [moving]
    else:
        return base
    return pulumi.ResourceOptions.merge(base, pulumi.ResourceOptions(ignore_changes=ignored))


def _input_names(args_type: type) -> list[str]:
    """Every input an SDK `*Args` class declares, by its Python name."""
    return sorted(name for name, value in vars(args_type).items() if isinstance(value, property))


# What undeclared traffic is created with: all to the newest revision, which the candidate tag
# reaches; later releases pin revisions by name (stacks/release_plan.py).
RELEASE_MANAGED = (TrafficTarget(percent=100, tag="candidate"),)


def _service_traffic(targets: tuple[TrafficTarget, ...]) -> list[run.ServiceTrafficArgs]:
    return [
        run.ServiceTrafficArgs(
            type="TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST"
            if t.is_latest
            else "TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION",
            revision=None if t.is_latest else t.revision,
            percent=t.percent,
            tag=t.tag,
        )
        for t in targets
    ]


class ApiService(pulumi.ComponentResource):
    """A Cloud Run service whose revisions are named from the image digest and the template."""

    url: pulumi.Output[str]
    revision: pulumi.Output[str]
    service_name: pulumi.Output[str]
    # Revision name -> percent of the requests it serves now, as Cloud Run reports it.
    serving: pulumi.Output[dict[str, int]]

    def __init__(self, name: str, args: ApiServiceArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("liftoff:index:ApiService", name, None, opts)
        c = args.container
        self.revision = revision_of(args.service_name, c.image_digest, _service_template(args, None))
        service = run.Service(
            f"{name}-service",
            run.ServiceArgs(
                name=args.service_name,
                location=args.region,
                project=args.project,
                ingress=args.ingress,
                deletion_protection=args.deletion_protection,
                labels=dict(args.labels),
                custom_audiences=[args.audience] if args.audience else None,
                template=_service_template(args, self.revision),
                traffics=_service_traffic(args.traffic or RELEASE_MANAGED),
            ),
            opts=_release_options(
                c.options(self), run.ServiceArgs, "traffics", args.traffic is not None, args.traffic_only
            ),
        )
        members: tuple[str, ...] = ("allUsers",) if args.public else args.invokers
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
        # The Cloud Run resource itself: depends_on on this component would not reach it.
        self.workload = service
        self.url = service.uri
        self.service_name = service.name
        self.serving = pulumi.Output.all(service.traffic_statuses, service.latest_ready_revision).apply(
            lambda v: serving(v[0], v[1])
        )
        self.register_outputs({"url": self.url, "revision": self.revision, "serving": self.serving})


@dataclass(frozen=True)
class WorkerPoolArgs:
    """The worker: a Cloud Run worker pool, no endpoint, a fixed instance count."""

    pool_name: str
    region: str
    project: str
    container: Container
    # The instance count at creation; with `scaled`, a scaler owns it afterwards.
    instances: int = 1
    # A scaler (components/scaler.py) sets the count: no update sends the program's own.
    scaled: bool = False
    # None: releases manage the instance split (see RELEASE_MANAGED); a plain update never moves it.
    split: tuple[TrafficTarget, ...] | None = (TrafficTarget(percent=100),)
    # Only the instance split may change in this update: every other input keeps its recorded value.
    traffic_only: bool = False
    deletion_protection: bool = True
    labels: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check(self, instances=PoolInstances)
        if self.split is not None and any(t.tag for t in self.split):
            raise ValueError("split: worker instance splits take no tags")
        _check_release_targets(self.split, self.traffic_only, key="split", service=self.pool_name)


def _pool_template(args: WorkerPoolArgs, revision: pulumi.Input[str] | None) -> run.WorkerPoolTemplateArgs:
    c = args.container
    return run.WorkerPoolTemplateArgs(
        revision=revision,
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
    )


def _pool_split(targets: tuple[TrafficTarget, ...]) -> list[run.WorkerPoolInstanceSplitArgs]:
    return [
        run.WorkerPoolInstanceSplitArgs(
            type="INSTANCE_SPLIT_ALLOCATION_TYPE_LATEST"
            if t.is_latest
            else "INSTANCE_SPLIT_ALLOCATION_TYPE_REVISION",
            revision=None if t.is_latest else t.revision,
            percent=t.percent,
        )
        for t in targets
    ]


def _scaled_options(options: pulumi.ResourceOptions, scaled: bool) -> pulumi.ResourceOptions:
    """A scaled pool's count is the scaler's: `scaling` keeps its recorded value on every update.

    The provider sends the whole pool on update, `scaling` included, from the state
    (hashicorp/terraform-provider-google, resource_cloud_run_v2_worker_pool.go: a PATCH without an
    update mask), so the recorded count must be the live one: Pulumi.yaml refreshes before every
    operation (`options.refresh: always`), and so does every release update (release/automation.py).
    """
    if not scaled:
        return options
    scaled_options = pulumi.ResourceOptions.merge(options, pulumi.ResourceOptions())
    scaled_options.ignore_changes = sorted({*(options.ignore_changes or []), "scaling"})
    return scaled_options


class WorkerPool(pulumi.ComponentResource):
    """Workers pull their jobs: nothing reaches them, so they expose nothing."""

    revision: pulumi.Output[str]
    pool_name: pulumi.Output[str]
    # Revision name -> percent of the instances it runs now, as Cloud Run reports it.
    serving: pulumi.Output[dict[str, int]]

    def __init__(self, name: str, args: WorkerPoolArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("liftoff:index:WorkerPool", name, None, opts)
        c = args.container
        self.revision = revision_of(args.pool_name, c.image_digest, _pool_template(args, None))
        pool = run.WorkerPool(
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
                instance_splits=_pool_split(args.split or (TrafficTarget(percent=100),)),
                template=_pool_template(args, self.revision),
            ),
            opts=_scaled_options(
                _release_options(
                    c.options(self),
                    run.WorkerPoolArgs,
                    "instance_splits",
                    args.split is not None,
                    args.traffic_only,
                ),
                args.scaled,
            ),
        )
        # The Cloud Run resource itself: depends_on on this component would not reach it.
        self.workload = pool
        self.pool_name = pool.name
        self.serving = pulumi.Output.all(pool.instance_split_statuses, pool.latest_ready_revision).apply(
            lambda v: serving(v[0], v[1])
        )
        self.register_outputs({"revision": self.revision, "serving": self.serving})


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
    # With a trigger, every new trigger runs the job once and the update waits for it to succeed.
    run_on: pulumi.Input[str] | None = None
    deletion_protection: bool = True
    labels: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.command:
            raise ValueError("command: a job needs a command")
        check(self, timeout_seconds=JobTimeoutSeconds)


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
        opts=c.options(parent),
    )


class MigrationsJob(pulumi.ComponentResource):
    """`alembic upgrade head`, run to completion on every new image, before the API changes.

    A JobRun triggered by the image digest starts one execution per new image and waits for it
    to succeed. The API and the worker list this component in their containers' `after`, so their
    new revisions are only created (and only take traffic) once the schema is migrated. A failed
    migration fails the update, leaves the API and the worker as they were, and records nothing:
    the next `pulumi up` runs the migrations again (see components/jobrun.py).
    """

    job: run.Job
    job_name: pulumi.Output[str]
    execution: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        args: JobArgs,
        opts: pulumi.ResourceOptions | None = None,
        provider: JobRunProvider | None = None,
    ) -> None:
        if args.run_on is None:  # checked before anything, this component included, is registered
            raise ValueError("run_on: migrations need a trigger per image, such as its digest")
        super().__init__("liftoff:index:MigrationsJob", name, None, opts)
        self.job = _job(f"{name}-job", args, self)
        runner = JobRun(
            f"{name}-run",
            job=pulumi.Output.format(
                "projects/{0}/locations/{1}/jobs/{2}", args.project, args.region, self.job.name
            ),
            trigger=args.run_on,
            # Every attempt may use the whole task timeout.
            timeout_seconds=args.timeout_seconds * (args.max_retries + 1),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.job]),
            provider=provider,
        )
        self.job_name = self.job.name
        self.execution = runner.execution
        self.register_outputs({"job_name": self.job_name, "execution": self.execution})


@dataclass(frozen=True)
class RetentionJobArgs:
    """The cleanup job and when Cloud Scheduler runs it."""

    job: JobArgs
    schedule: str = "17 3 * * *"
    time_zone: str = "Etc/UTC"
    scheduler_account: pulumi.Input[str] = ""

    def __post_init__(self) -> None:
        check(self, schedule=Cron)


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
