"""Wire the components into one environment of Liftoff. Only wiring: the rules live in components."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pulumi

from app.settings import ENV_VARS, Role
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
from components.identity import ServiceAccounts, ServiceAccountsArgs
from components.image import ContainerImage, ContainerImageArgs, source_tag
from components.monitoring import Monitoring, MonitoringArgs
from components.secrets import SecretRef, Secrets, SecretsArgs, SecretSpec
from components.supabase import SupabaseDatabase, SupabaseDatabaseArgs
from components.traffic import candidate_tags
from components.upstash import UpstashRedis, UpstashRedisArgs
from stacks.settings import StackSettings

ROOT = Path(__file__).resolve().parents[1]
ACCOUNT = {Role.API: "api", Role.WORKER: "worker", Role.MIGRATE: "migrate"}
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


def build(settings: StackSettings) -> dict[str, Any]:
    """Declare the whole environment; returns the stack outputs."""
    s = settings
    labels = s.labels
    accounts = ServiceAccounts(
        "identity",
        ServiceAccountsArgs(
            project=s.project, prefix=s.prefix, accounts=("api", "worker", "migrate", "scheduler")
        ),
    )
    database = SupabaseDatabase(
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
    redis = UpstashRedis(
        "redis",
        UpstashRedisArgs(
            database_name=s.prefix,
            primary_region=s.redis.primary_region,
            budget=s.redis.budget,
            protect=s.environment == "prod",
        ),
    )

    # Every secret the app's contract declares, readable by exactly the workloads that use it.
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
    secrets = Secrets(
        "secrets",
        SecretsArgs(prefix=s.prefix, secrets=secret_specs, accounts=accounts.emails, labels=labels),
    )

    image = ContainerImage(
        "image",
        ContainerImageArgs(
            project=s.project,
            region=s.region,
            repository_id="liftoff",
            image_name="app",
            context=str(ROOT),
            dockerfile=str(ROOT / "app" / "Dockerfile"),
            tag=s.image_tag or source_tag(ROOT, IMAGE_SOURCES),
            labels=labels,
        ),
    )

    plain: dict[str, pulumi.Input[str] | None] = {
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

    def container(role: Role, cpu: str, memory: str, after: tuple[pulumi.Resource, ...] = ()) -> Container:
        return Container(
            image=image.ref,
            image_digest=image.digest,
            service_account=accounts.emails[ACCOUNT[role]],
            env=_plain_env(role, plain),
            secret_env=_secret_env(role, secrets.refs),
            cpu=cpu,
            memory=memory,
            after=after,
        )

    # Migrations run to completion before the API or the worker change (see MigrationsJob).
    migrations = MigrationsJob(
        "migrations",
        JobArgs(
            job_name=s.names.migrations,
            region=s.region,
            project=s.project,
            container=container(Role.MIGRATE, "1", "512Mi"),
            command=("python", "-m", "app", "migrate"),
            # A new image, or new limits for migrate to write, runs the migrations job again.
            run_on=pulumi.Output.concat(
                image.digest,
                f";limits={s.app.tenant_max_active_jobs}/{s.app.tenant_max_submissions_per_minute}",
            ),
            deletion_protection=s.api.deletion_protection,
            labels=labels,
        ),
    )
    api = ApiService(
        "api",
        ApiServiceArgs(
            service_name=s.api_service_name,
            region=s.region,
            project=s.project,
            container=container(Role.API, s.api.cpu, s.api.memory, after=(migrations,)),
            min_instances=s.api.min_instances,
            max_instances=s.api.max_instances,
            concurrency=s.api.concurrency,
            timeout_seconds=s.api.timeout_seconds,
            ingress=s.api.ingress,
            public=s.api.public,
            invokers=s.api.invokers,
            deletion_protection=s.api.deletion_protection,
            traffic=s.api.traffic,
            labels=labels,
            audience=s.api_service_name,
        ),
    )
    worker = WorkerPool(
        "worker",
        WorkerPoolArgs(
            pool_name=s.worker_pool_name,
            region=s.region,
            project=s.project,
            container=container(Role.WORKER, s.worker.cpu, s.worker.memory, after=(migrations,)),
            instances=s.worker.instances,
            split=s.worker.split,
            deletion_protection=s.api.deletion_protection,
            labels=labels,
        ),
    )
    retention = RetentionJob(
        "retention",
        RetentionJobArgs(
            job=JobArgs(
                job_name=s.names.retention,
                region=s.region,
                project=s.project,
                container=container(Role.WORKER, "1", "512Mi"),
                command=("python", "-m", "app", "cleanup"),
                timeout_seconds=1800,
                deletion_protection=s.api.deletion_protection,
                labels=labels,
            ),
            schedule=s.retention.schedule,
            scheduler_account=accounts.emails["scheduler"],
        ),
    )
    Monitoring(
        "monitoring",
        MonitoringArgs(
            project=s.project,
            prefix=s.prefix,
            api_service_name=api.service_name,
            api_url=api.url,
            notification_email=s.alerts.email,
            error_ratio=s.alerts.error_ratio,
            p95_latency_ms=s.alerts.p95_latency_ms,
            job_failure_ratio=s.alerts.job_failure_ratio,
            oldest_queued_seconds=s.alerts.oldest_queued_seconds,
            labels=labels,
        ),
    )
    tags = candidate_tags(s.api.traffic)
    return {
        "api_url": api.url,
        "api_audience": s.api_service_name,
        "api_revision": api.revision,
        "api_candidate_urls": api.url.apply(
            lambda url: {tag: url.replace("https://", f"https://{tag}---", 1) for tag in tags}
        ),
        "api_traffic": [
            {"revision": t.revision, "percent": t.percent, **({"tag": t.tag} if t.tag else {})}
            for t in s.api.traffic
        ],
        "worker_revision": worker.revision,
        "worker_split": [{"revision": t.revision, "percent": t.percent} for t in s.worker.split],
        "image_ref": image.ref,
        "migrations_job": migrations.job_name,
        "retention_job": retention.job_name,
        "supabase_project_ref": database.project_ref,
        "database_url": database.transaction_dsn,
        "migrations_database_url": database.session_dsn,
        "redis_url": redis.dsn,
    }
