"""PoolScaler: sizes a worker pool to its queue, down to a floor when idle.

A small Cloud Run service (`python -m app scaler`), request-billed and scaled to zero itself,
asked to reconcile by Cloud Scheduler each minute and woken by the API when it accepts a job.
It runs as its own identity, which holds exactly two grants (docs/scaling.md, "Identity"):

- on the one worker pool, a custom role of `run.workerpools.get` and `run.workerpools.update`,
  the only permission that changes an instance count (https://cloud.google.com/run/docs/reference/iam/permissions);
- on the worker's service account, a custom role of `iam.serviceAccounts.actAs` alone, which
  Cloud Run requires of whoever updates a workload running as that account
  (https://cloud.google.com/run/docs/configuring/workerpools/manual-scaling, "Required roles").

IAM has nothing narrower than update: what keeps the scaler to the instance count is its code
(one PATCH with `updateMask=scaling.manualInstanceCount`, app/scaler/pools.py) and that nothing
else can run as its identity. The workloads get only `roles/run.invoker` on the scaler: they can
ask it to reconcile, and change nothing.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import pulumi
import pulumi_gcp as gcp
from pulumi_gcp import cloudrunv2 as run

from components.cloudrun import CONTAINER_PORT, Container, service_envs
from components.rules import Cron, check

# IAM custom role ids: https://cloud.google.com/iam/docs/reference/rest/v1/projects.roles/create
# ("roleId ... can only include letters, numbers, underscores and periods", at most 64).
ROLE_ID = re.compile(r"^[a-zA-Z0-9_.]{3,64}$")
POOL_PERMISSIONS = ("run.workerpools.get", "run.workerpools.update")
ACT_AS_PERMISSIONS = ("iam.serviceAccounts.actAs",)


@dataclass(frozen=True)
class PoolScalerArgs:
    """The scaler of one worker pool: where it runs, who may wake it, and when it reconciles."""

    service_name: str
    # Custom role ids start with it: roles are unique per project, so it carries the stack. A role
    # deleted (the pool made fixed) stays reserved for weeks; declared again, the provider undeletes
    # it (hashicorp/terraform-provider-google, resource_google_project_iam_custom_role.go, Create).
    role_prefix: str
    region: str
    project: str
    pool_name: pulumi.Input[str]
    container: Container
    worker_account: pulumi.Input[str]
    scheduler_account: pulumi.Input[str]
    # Service accounts allowed to POST /wake (the API's).
    wakers: tuple[pulumi.Input[str], ...] = ()
    schedule: str = "* * * * *"
    deletion_protection: bool = True
    labels: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check(self, schedule=Cron)
        for suffix in ("pool_scaler", "worker_act_as"):
            role_id = f"{self.role_prefix}_{suffix}"
            if not ROLE_ID.match(role_id):
                raise ValueError(
                    f"role_prefix: custom role id {role_id!r} is not valid (3-64 of a-zA-Z0-9_.)"
                )


class PoolScaler(pulumi.ComponentResource):
    """The scaler service, its two grants, its invokers and its schedule."""

    url: pulumi.Output[str]
    wake_url: pulumi.Output[str]
    service_name: pulumi.Output[str]

    def __init__(self, name: str, args: PoolScalerArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("liftoff:index:PoolScaler", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        member = pulumi.Output.concat("serviceAccount:", args.container.service_account)
        self._grant_pool(name, args, member, child)
        self._grant_act_as(name, args, member, child)
        service = self._service(name, args)
        for i, waker in enumerate((*args.wakers, args.scheduler_account)):
            run.ServiceIamMember(
                f"{name}-invoker-{i}",
                run.ServiceIamMemberArgs(
                    name=service.name,
                    location=args.region,
                    project=args.project,
                    role="roles/run.invoker",
                    member=pulumi.Output.concat("serviceAccount:", waker),
                ),
                opts=child,
            )
        self.url = service.uri
        self.service_name = service.name
        self.wake_url = pulumi.Output.concat(service.uri, "/wake")
        self._schedule(name, args, service, child)
        self.register_outputs({"url": self.url, "wake_url": self.wake_url})

    @staticmethod
    def _grant_pool(
        name: str, args: PoolScalerArgs, member: pulumi.Input[str], child: pulumi.ResourceOptions
    ) -> None:
        role = _custom_role(
            f"{name}-pool-role",
            args,
            "pool_scaler",
            "set the worker pool's instance count",
            "Reads and updates one worker pool; bound on that pool only.",
            POOL_PERMISSIONS,
            child,
        )
        run.WorkerPoolIamMember(
            f"{name}-pool-grant",
            run.WorkerPoolIamMemberArgs(
                name=args.pool_name, location=args.region, project=args.project, role=role.name, member=member
            ),
            opts=child,
        )

    @staticmethod
    def _grant_act_as(
        name: str, args: PoolScalerArgs, member: pulumi.Input[str], child: pulumi.ResourceOptions
    ) -> None:
        role = _custom_role(
            f"{name}-act-as-role",
            args,
            "worker_act_as",
            "act as the worker's identity",
            "What Cloud Run requires to update a workload that runs as the account; bound on the"
            " worker's account only.",
            ACT_AS_PERMISSIONS,
            child,
        )
        gcp.serviceaccount.IAMMember(
            f"{name}-act-as-grant",
            gcp.serviceaccount.IAMMemberArgs(
                service_account_id=pulumi.Output.format(
                    "projects/{0}/serviceAccounts/{1}", args.project, args.worker_account
                ),
                role=role.name,
                member=member,
            ),
            opts=child,
        )

    def _service(self, name: str, args: PoolScalerArgs) -> run.Service:
        c = args.container
        return run.Service(
            f"{name}-service",
            run.ServiceArgs(
                name=args.service_name,
                location=args.region,
                project=args.project,
                ingress="INGRESS_TRAFFIC_ALL",
                deletion_protection=args.deletion_protection,
                labels=dict(args.labels),
                template=run.ServiceTemplateArgs(
                    service_account=c.service_account,
                    labels=dict(args.labels),
                    # One instance at most: reconciles are serialized in it (app/scaler/service.py).
                    scaling=run.ServiceTemplateScalingArgs(min_instance_count=0, max_instance_count=1),
                    max_instance_request_concurrency=10,
                    timeout="30s",
                    containers=[
                        run.ServiceTemplateContainerArgs(
                            image=c.image,
                            args=["python", "-m", "app", "scaler"],
                            ports=run.ServiceTemplateContainerPortsArgs(container_port=CONTAINER_PORT),
                            envs=service_envs(c),
                            # Request-based billing: the scaler costs only while it reconciles.
                            resources=run.ServiceTemplateContainerResourcesArgs(
                                limits={"cpu": c.cpu, "memory": c.memory}, cpu_idle=True
                            ),
                            startup_probe=run.ServiceTemplateContainerStartupProbeArgs(
                                http_get=run.ServiceTemplateContainerStartupProbeHttpGetArgs(path="/health"),
                                period_seconds=2,
                                timeout_seconds=2,
                                failure_threshold=15,
                            ),
                        )
                    ],
                ),
            ),
            opts=c.options(self),
        )

    @staticmethod
    def _schedule(
        name: str, args: PoolScalerArgs, service: run.Service, child: pulumi.ResourceOptions
    ) -> None:
        gcp.cloudscheduler.Job(
            f"{name}-schedule",
            gcp.cloudscheduler.JobArgs(
                name=f"{args.service_name}-schedule",
                region=args.region,
                project=args.project,
                schedule=args.schedule,
                time_zone="Etc/UTC",
                attempt_deadline="30s",
                # The next run is a minute away: a retry would only overlap it.
                retry_config=gcp.cloudscheduler.JobRetryConfigArgs(retry_count=0),
                http_target=gcp.cloudscheduler.JobHttpTargetArgs(
                    http_method="POST",
                    uri=pulumi.Output.concat(service.uri, "/reconcile"),
                    oidc_token=gcp.cloudscheduler.JobHttpTargetOidcTokenArgs(
                        service_account_email=args.scheduler_account, audience=service.uri
                    ),
                ),
            ),
            opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=[service])),
        )


def _custom_role(
    resource_name: str,
    args: PoolScalerArgs,
    suffix: str,
    what: str,
    description: str,
    permissions: tuple[str, ...],
    child: pulumi.ResourceOptions,
) -> gcp.projects.IAMCustomRole:
    """A project custom role of the scaler's, its id after the stack's prefix."""
    return gcp.projects.IAMCustomRole(
        resource_name,
        gcp.projects.IAMCustomRoleArgs(
            project=args.project,
            role_id=f"{args.role_prefix}_{suffix}",
            title=f"{args.service_name}: {what}",
            description=description,
            permissions=list(permissions),
            stage="GA",
        ),
        opts=child,
    )
