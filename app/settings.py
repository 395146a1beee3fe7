"""Runtime settings, and the one list of every environment variable the app reads.

The infrastructure is tested against `ENV_VARS`: each entry says whether the variable
is a secret (delivered by Secret Manager, never a plain value), whether a workload
refuses to start without it, and which workloads read it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Role(StrEnum):
    """A workload that runs the app's image."""

    API = "api"
    WORKER = "worker"
    MIGRATE = "migrate"
    SCALER = "scaler"


class PoolMode(StrEnum):
    """How the app pools Postgres connections."""

    # A small QueuePool, behind a transaction pooler too: its statements are pooler-safe, and
    # a pooler in transaction mode pins no server connection to an idle client connection.
    AUTO = "auto"
    QUEUE = "queue"
    NULL = "null"


ALL_ROLES = frozenset(Role)
SERVING = frozenset({Role.API, Role.WORKER})
WORKER = frozenset({Role.WORKER})
API = frozenset({Role.API})
SCALER = frozenset({Role.SCALER})
# The scaler reads the queue's demand in Postgres (one function, app/scaler/demand.py).
READS_DATABASE = SERVING | SCALER
TRANSACTION_POOLER_PORT = 6543


def _var(
    description: str, *, used_by: frozenset[Role], secret: bool = False, required: bool = False
) -> dict[str, Any]:
    # Stored as JSON schema extras so that the contract lives on the field it describes.
    return {
        "description": description,
        "json_schema_extra": {
            "secret": secret,
            "required": required,
            "used_by": sorted(used_by),
        },
    }


class SettingsError(ValueError):
    """A workload's settings are missing or inconsistent; the message names the variables."""


class Settings(BaseSettings):
    """Every setting of the API, the worker and the migrations, read from the environment."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    app_env: Literal["local", "test", "staging", "prod"] = Field(
        "prod", **_var("Deployment environment; `local` enables the dev-token tool.", used_by=ALL_ROLES)
    )
    database_url: SecretStr | None = Field(
        None,
        **_var(
            "Pooled Postgres DSN for the app (Supabase transaction pooler, port 6543, in the cloud).",
            used_by=READS_DATABASE,
            secret=True,
            required=True,
        ),
    )
    migrations_database_url: SecretStr | None = Field(
        None,
        **_var(
            "Direct or session-mode Postgres DSN that Alembic migrates over.",
            used_by=frozenset({Role.MIGRATE}),
            secret=True,
            required=True,
        ),
    )
    redis_url: SecretStr | None = Field(
        None,
        **_var("Redis DSN (`rediss://` in the cloud).", used_by=SERVING, secret=True, required=True),
    )
    db_pool_mode: PoolMode = Field(
        PoolMode.AUTO,
        **_var("`auto` (= `queue`), `queue` or `null` (a new connection per use).", used_by=READS_DATABASE),
    )
    db_transaction_pooler: bool | None = Field(
        None,
        **_var(
            "Whether DATABASE_URL is a transaction-mode pooler (no prepared-statement reuse);"
            " unset: yes when its port is 6543.",
            used_by=READS_DATABASE,
        ),
    )
    db_pool_size: int = Field(10, ge=1, le=100, **_var("QueuePool size per process.", used_by=SERVING))
    db_max_overflow: int = Field(5, ge=0, le=100, **_var("QueuePool overflow per process.", used_by=SERVING))
    db_connect_timeout_seconds: float = Field(
        3.0, gt=0, le=60, **_var("Timeout for opening a Postgres connection.", used_by=READS_DATABASE)
    )
    db_request_timeout_seconds: float = Field(
        5.0,
        gt=0,
        le=60,
        **_var(
            "Bound on a request's Postgres work (pool wait, connect, statements); past it, 503.",
            used_by=frozenset({Role.API}),
        ),
    )
    tenant_max_active_jobs: int | None = Field(
        100,
        ge=1,
        **_var(
            "Jobs an organization may have queued or running at once; unset: no limit.",
            used_by=frozenset({Role.MIGRATE}),
        ),
    )
    tenant_max_submissions_per_minute: int | None = Field(
        300,
        ge=1,
        **_var(
            "Jobs an organization may submit in any 60 seconds; unset: no limit.",
            used_by=frozenset({Role.MIGRATE}),
        ),
    )
    db_statement_timeout_ms: int = Field(
        10_000, ge=0, **_var("statement_timeout for tenant transactions; 0 turns it off.", used_by=SERVING)
    )
    supabase_jwt_secret: SecretStr | None = Field(
        None,
        **_var(
            "The Supabase project's JWT secret, for HS256 tokens.", used_by=frozenset({Role.API}), secret=True
        ),
    )
    supabase_jwks_url: str | None = Field(
        None,
        **_var("The Supabase project's JWKS URL, for ES256 and RS256 tokens.", used_by=frozenset({Role.API})),
    )
    jwt_audience: str = Field("authenticated", **_var("Required `aud` claim.", used_by=frozenset({Role.API})))
    jwt_leeway_seconds: int = Field(
        30, ge=0, le=300, **_var("Clock-skew leeway for `exp` and `nbf`.", used_by=frozenset({Role.API}))
    )
    jwks_cache_seconds: int = Field(
        600, ge=60, **_var("How long fetched JWKS keys are trusted.", used_by=frozenset({Role.API}))
    )
    tenant_claim: str = Field(
        "app_metadata.organization_id",
        pattern=r"^[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*$",
        **_var("Dotted path of the organization id claim in the JWT.", used_by=frozenset({Role.API})),
    )
    default_model: str = Field(
        "gpt-4o-mini", **_var("Model used when a request names none.", used_by=frozenset({Role.API}))
    )
    ready_timeout_seconds: float = Field(
        1.0, gt=0, le=10, **_var("Per-dependency timeout of `/ready`.", used_by=frozenset({Role.API}))
    )
    ai_provider: Literal["local", "openai"] = Field(
        "local", **_var("Generation provider: `local` (deterministic, offline) or `openai`.", used_by=WORKER)
    )
    openai_api_key: SecretStr | None = Field(
        None, **_var("API key of the openai provider.", used_by=WORKER, secret=True)
    )
    openai_base_url: str = Field(
        "https://api.openai.com/v1", **_var("Base URL of the OpenAI-compatible API.", used_by=WORKER)
    )
    openai_timeout_seconds: float = Field(
        120.0, gt=0, le=3600, **_var("Timeout of one provider call.", used_by=WORKER)
    )
    local_provider_latency_ms: int = Field(
        0, ge=0, le=600_000, **_var("Simulated latency of the local provider.", used_by=WORKER)
    )
    local_provider_failure_rate: float = Field(
        0.0, ge=0, le=1, **_var("Share of local-provider calls that fail (retryably).", used_by=WORKER)
    )
    worker_concurrency: int = Field(
        4, ge=1, le=256, **_var("Jobs one worker process runs at once.", used_by=WORKER | SCALER)
    )
    worker_wake_url: str | None = Field(
        None,
        pattern=r"^https?://[^\s/]+(/\S*)?$",
        **_var(
            "The scaler's `/wake` URL: after accepting a job the API asks it to start workers (at"
            " most once per WORKER_WAKE_SECONDS); unset, it asks nothing (a fixed pool).",
            used_by=API,
        ),
    )
    worker_wake_seconds: float = Field(
        10.0,
        ge=0,
        le=3600,
        **_var("Least time between two wake requests of all API instances (a Redis key).", used_by=API),
    )
    worker_wake_auth: Literal["none", "google"] = Field(
        "none",
        **_var(
            "`google`: the wake request carries an ID token from the metadata server for the"
            " scaler's URL (Cloud Run IAM checks it); `none` locally.",
            used_by=API,
        ),
    )
    scaler_pool: str | None = Field(
        None,
        pattern=r"^(local|projects/[^/]+/locations/[^/]+/workerPools/[^/]+)$",
        **_var(
            "The worker pool the scaler sizes: `projects/P/locations/L/workerPools/NAME`, or `local`"
            " (worker processes started here, `make dev SCALE=on-demand`).",
            used_by=SCALER,
            required=True,
        ),
    )
    scaler_min_instances: int = Field(
        0, ge=0, le=100, **_var("Instances kept while no job is queued or running.", used_by=SCALER)
    )
    scaler_max_instances: int = Field(
        10, ge=1, le=100, **_var("Most instances the queue or a release's split scales to.", used_by=SCALER)
    )
    scaler_idle_seconds: float = Field(
        300.0,
        ge=0,
        le=86_400,
        **_var("How long no job is queued or running before the pool goes to its floor.", used_by=SCALER),
    )
    scaler_interval_seconds: float = Field(
        0.0,
        ge=0,
        le=3600,
        **_var(
            "Period of the scaler's own reconcile loop; 0: it reconciles only when asked (Cloud"
            " Scheduler's POST /reconcile, the API's POST /wake).",
            used_by=SCALER,
        ),
    )
    scaler_start_delay_seconds: float = Field(
        0.0,
        ge=0,
        le=600,
        **_var(
            "`local` pool only: a simulated instance start delay before each worker process starts.",
            used_by=SCALER,
        ),
    )
    worker_max_attempts: int = Field(
        5, ge=1, le=100, **_var("Attempts before a job is dead-lettered as failed.", used_by=WORKER)
    )
    worker_lease_seconds: float = Field(
        60.0, ge=1, le=3600, **_var("How long a claimed job is held without a heartbeat.", used_by=WORKER)
    )
    worker_sweep_seconds: float = Field(
        15.0,
        ge=0.1,
        le=3600,
        **_var("Period of the Postgres sweep for ready and abandoned jobs.", used_by=WORKER),
    )
    worker_wait_seconds: int = Field(
        240, ge=1, le=3600, **_var("Timeout of the blocking Redis read while idle.", used_by=WORKER)
    )
    worker_shutdown_grace_seconds: float = Field(
        7.0, ge=0, le=60, **_var("Time in-flight jobs get to finish after SIGTERM.", used_by=WORKER)
    )
    worker_retry_base_seconds: float = Field(
        2.0, gt=0, le=3600, **_var("First retry delay; doubles per attempt, with jitter.", used_by=WORKER)
    )
    worker_retry_max_seconds: float = Field(
        300.0, gt=0, le=86_400, **_var("Longest retry delay.", used_by=WORKER)
    )
    retention_days: int = Field(
        30,
        ge=1,
        le=3650,
        **_var("Age after which the cleanup command deletes generation_logs.", used_by=WORKER),
    )
    sentry_dsn: SecretStr | None = Field(
        None, **_var("Turns on Sentry error reporting.", used_by=SERVING, secret=True)
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", **_var("Minimum log severity.", used_by=ALL_ROLES)
    )
    log_format: Literal["json", "console"] = Field(
        "json", **_var("`json` (Cloud Logging) or `console` (humans).", used_by=ALL_ROLES)
    )
    google_cloud_project: str | None = Field(
        None, **_var("Project id used to link logs to Cloud Trace.", used_by=SERVING)
    )
    http_max_header_bytes: int = Field(
        16_384,
        ge=1024,
        le=1_048_576,
        **_var("Largest request line and headers the API reads; more is a 431.", used_by=API),
    )
    http_request_timeout_seconds: float = Field(
        15.0,
        gt=0,
        le=300,
        **_var(
            "Time a client has to send a whole request (headers and body); slower is a 408.",
            used_by=frozenset({Role.API}),
        ),
    )
    http_keep_alive_seconds: int = Field(
        # Above the 600 s idle timeout of Google's front ends, so that the server never closes first.
        # https://cloud.google.com/load-balancing/docs/https#timeouts_and_retries
        620,
        ge=1,
        le=3600,
        **_var("How long an idle keep-alive connection is kept.", used_by=frozenset({Role.API})),
    )
    fault_error_ratio: float = Field(
        0.0,
        ge=0,
        le=1,
        **_var(
            "Share of API requests (probes excepted) answered with a 500; `local` and `test` only,"
            " for release rehearsals.",
            used_by=API,
        ),
    )
    fault_delay_ms: int = Field(
        0,
        ge=0,
        le=60_000,
        **_var(
            "Delay added to every API request (probes excepted); `local` and `test` only, for"
            " release rehearsals.",
            used_by=API,
        ),
    )
    fault_job_error_ratio: float = Field(
        0.0,
        ge=0,
        le=1,
        **_var(
            "Share of the worker's attempts that fail (retryably); `local` and `test` only, for"
            " release rehearsals.",
            used_by=WORKER,
        ),
    )
    fault_job_delay_ms: int = Field(
        0,
        ge=0,
        le=600_000,
        **_var(
            "Delay added to every attempt of the worker; `local` and `test` only, for release rehearsals.",
            used_by=WORKER,
        ),
    )
    cloud_run_worker_pool_revision: str = Field(
        "local",
        min_length=1,
        **_var(
            "The worker pool revision the process runs as, recorded on every attempt (Cloud Run sets"
            " it: https://cloud.google.com/run/docs/container-contract#env-vars).",
            used_by=WORKER,
        ),
    )
    host: str = Field("127.0.0.1", **_var("Interface to listen on.", used_by=SERVING | SCALER))
    port: int = Field(
        8080, ge=1, le=65535, **_var("Port to listen on (set by Cloud Run).", used_by=SERVING | SCALER)
    )

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("supabase_jwks_url")
    @classmethod
    def _https_jwks(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        loopback = parts.hostname in {"127.0.0.1", "localhost", "::1"}
        if parts.scheme != "https" and not (parts.scheme == "http" and loopback):
            raise ValueError("must be an https:// URL (http:// is allowed for loopback only)")
        return value

    @model_validator(mode="after")
    def _faults_only_where_nobody_is_served(self) -> Settings:
        # A fault setting left on in a deployed environment would fail real users' requests.
        faults = {
            "FAULT_ERROR_RATIO": self.fault_error_ratio,
            "FAULT_DELAY_MS": self.fault_delay_ms,
            "FAULT_JOB_ERROR_RATIO": self.fault_job_error_ratio,
            "FAULT_JOB_DELAY_MS": self.fault_job_delay_ms,
        }
        set_faults = [name for name, value in faults.items() if value]
        if set_faults and self.app_env not in ("local", "test"):
            raise ValueError(
                f"{', '.join(set_faults)}: the FAULT_* settings are for rehearsals only: they are refused"
                f" unless APP_ENV is local or test (APP_ENV is {self.app_env})"
            )
        return self

    @model_validator(mode="after")
    def _scaler_holds_together(self) -> Settings:
        if self.scaler_min_instances > self.scaler_max_instances:
            raise ValueError(
                f"SCALER_MIN_INSTANCES ({self.scaler_min_instances}) is above SCALER_MAX_INSTANCES"
                f" ({self.scaler_max_instances})"
            )
        # Worker processes on this machine, or a simulated delay, make no sense where users are served.
        local_only = [
            name
            for name, on in (
                ("SCALER_POOL=local", self.scaler_pool == "local"),
                ("SCALER_START_DELAY_SECONDS", bool(self.scaler_start_delay_seconds)),
            )
            if on
        ]
        if local_only and self.app_env not in ("local", "test"):
            raise ValueError(
                f"{', '.join(local_only)}: a local pool is refused unless APP_ENV is local or test"
                f" (APP_ENV is {self.app_env})"
            )
        return self

    def require(self, role: Role) -> Settings:
        """Check that everything `role` needs is set; raise SettingsError naming what is not."""
        missing = [
            var.name
            for var in ENV_VARS
            if var.required and role in var.used_by and getattr(self, var.name.lower()) is None
        ]
        if missing:
            raise SettingsError(f"{role} needs these environment variables: {', '.join(missing)}")
        if role is Role.API and self.supabase_jwt_secret is None and self.supabase_jwks_url is None:
            raise SettingsError("api needs SUPABASE_JWT_SECRET or SUPABASE_JWKS_URL to verify tokens")
        if role is Role.WORKER and self.ai_provider == "openai" and self.openai_api_key is None:
            raise SettingsError("worker needs OPENAI_API_KEY when AI_PROVIDER is openai")
        return self

    def require_revision(self) -> Settings:
        """For the worker process (not the cleanup job, which runs the worker's settings as a
        Cloud Run job): its revision, which Cloud Run sets on a worker pool and every attempt
        records for the release's gates; SettingsError when a deployed worker has none."""
        if self.app_env in ("staging", "prod") and self.cloud_run_worker_pool_revision == "local":
            raise SettingsError(
                "worker needs CLOUD_RUN_WORKER_POOL_REVISION in staging and prod (Cloud Run sets it on"
                " a worker pool): every attempt records the revision the release's gates judge"
            )
        return self

    def secret(self, name: str) -> str:
        """The value of a secret setting that `require` has checked; SettingsError if unset."""
        value = getattr(self, name)
        if not isinstance(value, SecretStr):
            raise SettingsError(f"{name.upper()} is not set")
        return value.get_secret_value()

    def transaction_pooler(self) -> bool:
        """Whether DATABASE_URL goes through a transaction-mode pooler such as Supavisor's port 6543."""
        if self.db_transaction_pooler is not None:
            return self.db_transaction_pooler
        url = self.database_url.get_secret_value() if self.database_url else ""
        try:
            return urlsplit(url).port == TRANSACTION_POOLER_PORT
        except ValueError:
            return False

    def pool_mode(self) -> PoolMode:
        """The pool mode in effect: AUTO is a QueuePool, behind a transaction pooler too."""
        if self.db_pool_mode is not PoolMode.AUTO:
            return self.db_pool_mode
        return PoolMode.QUEUE


@dataclass(frozen=True, slots=True)
class EnvVar:
    """One environment variable of the app's contract with its infrastructure."""

    name: str
    secret: bool
    required: bool
    used_by: frozenset[Role]
    description: str


def _contract() -> tuple[EnvVar, ...]:
    out = []
    for field_name, field in Settings.model_fields.items():
        extra = field.json_schema_extra
        used_by = extra.get("used_by") if isinstance(extra, dict) else None
        if not isinstance(extra, dict) or not isinstance(used_by, list):
            raise TypeError(f"Settings.{field_name} lacks its contract entry (use _var)")
        out.append(
            EnvVar(
                name=field_name.upper(),
                secret=bool(extra["secret"]),
                required=bool(extra["required"]),
                used_by=frozenset(Role(str(r)) for r in used_by),
                description=field.description or "",
            )
        )
    return tuple(out)


ENV_VARS: tuple[EnvVar, ...] = _contract()


def env_vars_for(role: Role) -> tuple[EnvVar, ...]:
    """The variables a workload reads, secrets included."""
    return tuple(var for var in ENV_VARS if role in var.used_by)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
