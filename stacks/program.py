"""Wire the components into one environment of Liftoff. Only wiring: the rules live in components."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pulumi

from app.settings import ENV_VARS, Role
from components.cloudrun import (
    RELEASE_MANAGED,
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
from components.identity import ServiceAccounts, ServiceAccountsArgs
from components.image import ContainerImage, ContainerImageArgs, source_tag
from components.ledger import EMPTY, ReleaseLedger
from components.monitoring import Monitoring, MonitoringArgs
from components.scaler import PoolScaler, PoolScalerArgs
from components.secrets import SecretRef, Secrets, SecretsArgs, SecretSpec
from components.supabase import SupabaseDatabase, SupabaseDatabaseArgs
from components.traffic import TrafficTarget, candidate_tags
from components.upstash import UpstashRedis, UpstashRedisArgs
from stacks.release_plan import ReleasePlan
from stacks.settings import StackSettings

ROOT = Path(__file__).resolve().parents[1]
ACCOUNT = {Role.API: "api", Role.WORKER: "worker", Role.MIGRATE: "migrate", Role.SCALER: "scaler"}
CONTRACT = {var.name: var for var in ENV_VARS}
# What app/Dockerfile builds from (app/Dockerfile.dockerignore admits exactly these).
IMAGE_SOURCES = ("pyproject.toml", "app")


def _plain_env(role: Role, values: Mapping[str, pulumi.Input[str] | None]) -> dict[str, pulumi.Input[str]]:
    """The non-secret variables of the app's contract that this workload reads, where set."""
    env: dict[str, pulumi.Input[str]] = {}
    for name, value in values.items():
        var = CONTRACT[name]
        if var.secret:
            raise ValueError(f"{name} is a secret: it must go through Secret Manager")
        if role in var.used_by and value is not None:
            env[name] = value
    return env


def _secret_env(role: Role, refs: Mapping[str, SecretRef]) -> dict[str, SecretRef]:
    return {name: ref for name, ref in refs.items() if role in CONTRACT[name].used_by}


@dataclass(frozen=True)
class Traffic:
    """What this update declares about traffic: None leaves it to releases (see ApiServiceArgs)."""

    api: tuple[TrafficTarget, ...] | None
    worker: tuple[TrafficTarget, ...] | None
    traffic_only: bool = False


def traffic_of(settings: StackSettings, release: ReleasePlan | None) -> Traffic:
    """A release step's plan, else a split the stack file pins by hand, else release-managed."""
    if release is not None:
        return Traffic(api=release.api, worker=release.worker, traffic_only=release.traffic_only)
    return Traffic(api=settings.api.traffic, worker=settings.worker.split)


def ledger_of(release: ReleasePlan | None, after: Sequence[pulumi.Resource] = ()) -> ReleaseLedger:
    """The release ledger: written by a release, kept as recorded by a plain update.

    It is written after the traffic it records has been applied (`after`: the Cloud Run service
    and worker pool), so a traffic update that fails leaves the ledger as it was, and the next
    run sees the release as still in progress, not as sent back.
    """
    if release is not None:
        written = pulumi.ResourceOptions(depends_on=after)
        return ReleaseLedger("release-ledger", release.ledger.dumps(), opts=written)
    kept = pulumi.ResourceOptions(ignore_changes=["entries"], depends_on=after)
    return ReleaseLedger("release-ledger", EMPTY, opts=kept)


def _accounts(s: StackSettings) -> ServiceAccounts:
    return ServiceAccounts(
        "identity",
        ServiceAccountsArgs(
            project=s.project, prefix=s.prefix, accounts=("api", "worker", "migrate", "scheduler", "scaler")
        ),
    )


def _database(s: StackSettings) -> SupabaseDatabase:
    return SupabaseDatabase(
        "database",
        SupabaseDatabaseArgs(
            name=s.prefix,
            region=s.supabase.region,
            organization_id=s.supabase.organization_id if s.supabase.mode == "create" else None,
            project_ref=s.supabase.project_ref if s.supabase.mode == "adopt" else None,
            db_password=s.secrets.supabase_db_password if s.supabase.mode == "adopt" else None,
            jwt_secret=s.secrets.supabase_jwt_secret,
            protect=s.environment == "prod",
        ),
    )


def _redis(s: StackSettings) -> UpstashRedis:
    return UpstashRedis(
        "redis",
        UpstashRedisArgs(
            database_name=s.prefix,
            primary_region=s.redis.primary_region,
            budget=s.redis.budget,
            protect=s.environment == "prod",
        ),
    )


def _secrets(
    s: StackSettings, accounts: ServiceAccounts, database: SupabaseDatabase, redis: UpstashRedis
) -> Secrets:
    """Every secret the app's contract declares, readable by exactly the workloads that use it."""
    values: dict[str, pulumi.Input[str] | None] = {
        "DATABASE_URL": database.transaction_dsn,
        "MIGRATIONS_DATABASE_URL": database.session_dsn,
        "REDIS_URL": redis.dsn,
        "SUPABASE_JWT_SECRET": database.jwt_secret,
        "OPENAI_API_KEY": s.secrets.openai_api_key,
        "SENTRY_DSN": s.secrets.sentry_dsn,
    }
    secret_specs = {
        name: SecretSpec(value=value, accessors=tuple(sorted(ACCOUNT[r] for r in CONTRACT[name].used_by)))
        for name, value in values.items()
        if value is not None
    }
    return Secrets(
        "secrets",
        SecretsArgs(prefix=s.prefix, secrets=secret_specs, accounts=accounts.emails, labels=s.labels),
    )


def _image(s: StackSettings) -> ContainerImage:
    return ContainerImage(
        "image",
        ContainerImageArgs(
            project=s.project,
            region=s.region,
            repository_id=s.names.repository,
            image_name="app",
            context=str(ROOT),
            dockerfile=str(ROOT / "app" / "Dockerfile"),
            tag=s.image_tag or source_tag(ROOT, IMAGE_SOURCES),
            labels=s.labels,
        ),
    )


def _app_env(s: StackSettings, database: SupabaseDatabase) -> dict[str, pulumi.Input[str] | None]:
    """The plain (non-secret) values of the app's contract, as this stack sets them."""
    return {
        "APP_ENV": s.environment,
        "LOG_LEVEL": s.app.log_level,
        "LOG_FORMAT": "json",
        "GOOGLE_CLOUD_PROJECT": s.project,
        "SUPABASE_JWKS_URL": database.jwks_url,
        "DEFAULT_MODEL": s.app.default_model,
        "AI_PROVIDER": s.app.ai_provider,
        "WORKER_CONCURRENCY": str(s.worker.concurrency),
        "RETENTION_DAYS": str(s.retention.days),
        "TENANT_MAX_ACTIVE_JOBS": str(s.app.tenant_max_active_jobs),
        "TENANT_MAX_SUBMISSIONS_PER_MINUTE": str(s.app.tenant_max_submissions_per_minute),
    }


@dataclass(frozen=True)
class Workloads:
    """What every workload's container is made of: one image, the identities, the app's settings."""

    image: ContainerImage
    accounts: ServiceAccounts
    secrets: Secrets
    env: Mapping[str, pulumi.Input[str] | None]

    def container(
        self, role: Role, cpu: str, memory: str, after: tuple[pulumi.Resource, ...] = ()
    ) -> Container:
        """The container of a workload in `role`: its own identity, the variables that role reads."""
        return Container(
            image=self.image.ref,
            image_digest=self.image.digest,
            service_account=self.accounts.emails[ACCOUNT[role]],
            env=_plain_env(role, self.env),
            secret_env=_secret_env(role, self.secrets.refs),
            cpu=cpu,
            memory=memory,
            after=after,
        )


def _migrations(s: StackSettings, workloads: Workloads, release: ReleasePlan | None) -> MigrationsJob:
    # Contract migrations run only when a release lets them (its schema gate found no rollback
    # target that needs the old schema); `python -m app migrate` holds them otherwise.
    allowed = release.allowed_contract if release is not None else ()
    return MigrationsJob(
        "migrations",
        JobArgs(
            job_name=s.names.migrations,
            region=s.region,
            project=s.project,
            container=workloads.container(Role.MIGRATE, "1", "512Mi"),
            command=("python", "-m", "app", "migrate", *(f"--allow-contract={r}" for r in allowed)),
            # A new image, new limits for migrate to write, or contract migrations let run, run
            # the migrations job again.
            run_on=pulumi.Output.concat(
                workloads.image.digest,
                f";limits={s.app.tenant_max_active_jobs}/{s.app.tenant_max_submissions_per_minute}",
                f";contract={','.join(allowed)}" if allowed else "",
            ),
            deletion_protection=s.api.deletion_protection,
            labels=s.labels,
        ),
    )


def _retention(s: StackSettings, container: Container, accounts: ServiceAccounts) -> RetentionJob:
    return RetentionJob(
        "retention",
        RetentionJobArgs(
            job=JobArgs(
                job_name=s.names.retention,
                region=s.region,
                project=s.project,
                container=container,
                command=("python", "-m", "app", "cleanup"),
                timeout_seconds=1800,
                deletion_protection=s.api.deletion_protection,
                labels=s.labels,
            ),
            schedule=s.retention.schedule,
            scheduler_account=accounts.emails["scheduler"],
        ),
    )


def _monitoring(
    s: StackSettings, api: ApiService, worker: WorkerPool, scaler: PoolScaler | None
) -> Monitoring:
    return Monitoring(
        "monitoring",
        MonitoringArgs(
            project=s.project,
            region=s.region,
            prefix=s.prefix,
            api_service_name=api.service_name,
            api_url=api.url,
            api_public=s.api.public,
            worker_pool_name=worker.pool_name,
            scaler_service_name=scaler.service_name if scaler is not None else None,
            notification_email=s.alerts.email,
            error_ratio=s.alerts.error_ratio,
            p95_latency_ms=s.alerts.p95_latency_ms,
            job_failure_ratio=s.alerts.job_failure_ratio,
            oldest_queued_seconds=s.alerts.oldest_queued_seconds,
            labels=s.labels,
        ),
    )


def _api_service(s: StackSettings, container: Container, traffic: Traffic) -> ApiService:
    return ApiService(
        "api",
        ApiServiceArgs(
            service_name=s.api_service_name,
            region=s.region,
            project=s.project,
            container=container,
            min_instances=s.api.min_instances,
            max_instances=s.api.max_instances,
            concurrency=s.api.concurrency,
            timeout_seconds=s.api.timeout_seconds,
            ingress=s.api.ingress,
            public=s.api.public,
            invokers=s.api.invokers,
            deletion_protection=s.api.deletion_protection,
            traffic=traffic.api,
            traffic_only=traffic.traffic_only,
            labels=s.labels,
            audience=s.api_service_name,
        ),
    )


def _worker_pool(s: StackSettings, container: Container, traffic: Traffic) -> WorkerPool:
    return WorkerPool(
        "worker",
        WorkerPoolArgs(
            pool_name=s.worker_pool_name,
            region=s.region,
            project=s.project,
            container=container,
            # On demand, the floor at creation; the scaler sets the count from then on.
            instances=s.worker.min_instances if s.worker.instances is None else s.worker.instances,
            scaled=s.worker.on_demand,
            split=traffic.worker,
            traffic_only=traffic.traffic_only,
            deletion_protection=s.api.deletion_protection,
            labels=s.labels,
        ),
    )


def _scaler(s: StackSettings, workloads: Workloads, worker: WorkerPool) -> PoolScaler:
    env: dict[str, pulumi.Input[str]] = {
        "SCALER_POOL": pulumi.Output.format(
            "projects/{0}/locations/{1}/workerPools/{2}", s.project, s.region, worker.pool_name
        ),
        "SCALER_MIN_INSTANCES": str(s.worker.min_instances),
        "SCALER_MAX_INSTANCES": str(s.worker.max_instances),
        "SCALER_IDLE_SECONDS": str(s.worker.idle_seconds),
    }
    base = workloads.container(Role.SCALER, "1", "512Mi")
    return PoolScaler(
        "scaler",
        PoolScalerArgs(
            service_name=s.names.scaler,
            role_prefix=s.prefix.replace("-", "_"),
            region=s.region,
            project=s.project,
            pool_name=worker.pool_name,
            container=replace(base, env={**base.env, **env}),
            worker_account=workloads.accounts.emails["worker"],
            scheduler_account=workloads.accounts.emails["scheduler"],
            wakers=(workloads.accounts.emails["api"],),
            deletion_protection=s.api.deletion_protection,
            labels=s.labels,
        ),
    )


def _wake_env(scaler: PoolScaler | None) -> dict[str, pulumi.Input[str] | None]:
    """What the API needs to wake an on-demand pool's scaler: its URL, and an ID token for it."""
    if scaler is None:
        return {}
    return {"WORKER_WAKE_URL": scaler.wake_url, "WORKER_WAKE_AUTH": "google"}


def build(settings: StackSettings, release: ReleasePlan | None = None) -> dict[str, Any]:
    """Declare the whole environment; returns the stack outputs.

    `release` is the traffic of one step of a release (stacks/release_plan.py); without it, the
    traffic stays as the last release left it, unless the stack file pins it.
    """
    s = settings
    traffic = traffic_of(s, release)
    accounts = _accounts(s)
    database = _database(s)
    redis = _redis(s)
    secrets = _secrets(s, accounts, database, redis)
    image = _image(s)
    workloads = Workloads(image, accounts, secrets, _app_env(s, database))
    # Migrations run to completion before the API or the worker change (see MigrationsJob).
    migrations = _migrations(s, workloads, release)
    worker = _worker_pool(
        s, workloads.container(Role.WORKER, s.worker.cpu, s.worker.memory, after=(migrations,)), traffic
    )
    scaler = _scaler(s, workloads, worker) if s.worker.on_demand else None
    api_workloads = replace(workloads, env={**workloads.env, **_wake_env(scaler)})
    api = _api_service(
        s, api_workloads.container(Role.API, s.api.cpu, s.api.memory, after=(migrations,)), traffic
    )
    retention = _retention(s, workloads.container(Role.WORKER, "1", "512Mi"), accounts)
    _monitoring(s, api, worker, scaler)
    ledger = ledger_of(release, after=(api.workload, worker.workload))
    return {
        **_release_outputs(api, worker, ledger, traffic),
        "api_audience": s.api_service_name,
        "image_ref": image.ref,
        "migrations_job": migrations.job_name,
        "retention_job": retention.job_name,
        "supabase_project_ref": database.project_ref,
        "database_url": database.transaction_dsn,
        "migrations_database_url": database.session_dsn,
        "redis_url": redis.dsn,
    }


def _targets(targets: tuple[TrafficTarget, ...] | None) -> list[dict[str, Any]] | None:
    if targets is None:
        return None
    return [
        {"revision": t.revision, "percent": t.percent, **({"tag": t.tag} if t.tag else {})} for t in targets
    ]


def _release_outputs(
    api: ApiService, worker: WorkerPool, ledger: ReleaseLedger, traffic: Traffic
) -> dict[str, Any]:
    """What a release reads back: the revisions this template ships, what serves, and the ledger.

    `api_traffic` and `worker_split` are what this update declares (None: left to releases);
    `api_serving` and `worker_serving` are what Cloud Run reports as serving, which is what a
    release must start from, never "the latest created".
    """
    tags = candidate_tags(traffic.api or RELEASE_MANAGED)
    return {
        "api_url": api.url,
        "api_revision": api.revision,
        "api_candidate_urls": api.url.apply(
            lambda url: {tag: url.replace("https://", f"https://{tag}---", 1) for tag in tags}
        ),
        "api_traffic": _targets(traffic.api),
        "api_serving": api.serving,
        "worker_revision": worker.revision,
        "worker_split": _targets(traffic.worker),
        "worker_serving": worker.serving,
        "release_ledger": ledger.entries.apply(lambda text: json.loads(text or EMPTY)),
    }
