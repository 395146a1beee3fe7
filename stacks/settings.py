"""The stack's configuration, read once into one typed object, or every problem named by its key.

Nothing here registers a resource: an invalid stack fails before anything is created.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypeVar

import pulumi

from app.settings import Settings as AppContract
from components.cloudrun import CPU, MEMORY
from components.supabase import REGIONS as SUPABASE_REGIONS
from components.supabase_api import TOKEN_CONFIG_KEY as SUPABASE_TOKEN
from components.traffic import TrafficError, TrafficTarget, parse_targets
from components.upstash import PRIMARY_REGIONS as UPSTASH_REGIONS
from stacks.release import config as release_config
from stacks.release.config import ReleaseSettings

NAMESPACE = "liftoff"
PROJECT_ID = re.compile(r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$")
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
IMAGE_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
# Regions where Cloud Run services, jobs and worker pools all run.
CLOUD_RUN_REGIONS = frozenset(
    {
        "asia-east1",
        "asia-northeast1",
        "asia-south1",
        "asia-southeast1",
        "australia-southeast1",
        "europe-north1",
        "europe-west1",
        "europe-west2",
        "europe-west3",
        "europe-west4",
        "europe-west9",
        "me-west1",
        "northamerica-northeast1",
        "southamerica-east1",
        "us-central1",
        "us-east1",
        "us-east4",
        "us-west1",
        "us-west2",
    }
)
# The Supabase and Upstash regions nearest each Cloud Run region, used unless a stack says.
NEAREST_AWS_REGION = {
    "asia-east1": "ap-northeast-1",
    "asia-northeast1": "ap-northeast-1",
    "asia-south1": "ap-south-1",
    "asia-southeast1": "ap-southeast-1",
    "australia-southeast1": "ap-southeast-2",
    "europe-north1": "eu-central-1",
    "europe-west1": "eu-west-1",
    "europe-west2": "eu-west-2",
    "europe-west3": "eu-central-1",
    "europe-west4": "eu-central-1",
    "europe-west9": "eu-west-1",
    "me-west1": "eu-central-1",
    "northamerica-northeast1": "ca-central-1",
    "southamerica-east1": "sa-east-1",
    "us-central1": "us-east-1",
    "us-east1": "us-east-1",
    "us-east4": "us-east-1",
    "us-west1": "us-west-1",
    "us-west2": "us-west-1",
}
INGRESS = {
    "all": "INGRESS_TRAFFIC_ALL",
    "internal": "INGRESS_TRAFFIC_INTERNAL_ONLY",
    "internal-and-load-balancer": "INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER",
}
Environment = Literal["staging", "prod"]
T = TypeVar("T")


class ConfigError(ValueError):
    """The stack's configuration is invalid; the message lists each key and what is wrong."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid stack configuration:\n" + "\n".join(f"  - {p}" for p in problems))


class ConfigSource(Protocol):
    """Where settings come from: `pulumi.Config` in a real run."""

    def get(self, namespace: str, key: str) -> Any: ...

    def get_secret(self, namespace: str, key: str) -> pulumi.Output[str] | None: ...


class PulumiConfig:
    """Reads `namespace:key` from the stack's Pulumi configuration."""

    def get(self, namespace: str, key: str) -> Any:
        config = pulumi.Config(namespace)
        try:
            return config.get_object(key)
        except Exception:  # noqa: BLE001 - not JSON: a plain string value
            return config.get(key)

    def get_secret(self, namespace: str, key: str) -> pulumi.Output[str] | None:
        return pulumi.Config(namespace).get_secret(key)


@dataclass(frozen=True)
class SupabaseSettings:
    mode: Literal["create", "adopt"]
    region: str
    organization_id: str | None
    project_ref: str | None


@dataclass(frozen=True)
class RedisSettings:
    primary_region: str
    budget: int


@dataclass(frozen=True)
class ApiSettings:
    public: bool
    invokers: tuple[str, ...]
    min_instances: int
    max_instances: int
    concurrency: int
    cpu: str
    memory: str
    timeout_seconds: int
    ingress: str
    deletion_protection: bool
    # None: not declared in the stack file, so releases manage it (stacks/release/).
    traffic: tuple[TrafficTarget, ...] | None


@dataclass(frozen=True)
class WorkerSettings:
    instances: int
    concurrency: int
    cpu: str
    memory: str
    # None: not declared in the stack file, so releases manage it (stacks/release/).
    split: tuple[TrafficTarget, ...] | None


@dataclass(frozen=True)
class AppSettings:
    ai_provider: Literal["local", "openai"]
    default_model: str
    log_level: str
    # Per-tenant limits that protect AI spend (the app's TENANT_* settings; migrate applies them).
    tenant_max_active_jobs: int
    tenant_max_submissions_per_minute: int


@dataclass(frozen=True)
class RetentionSettings:
    days: int
    schedule: str


@dataclass(frozen=True)
class AlertSettings:
    email: str
    error_ratio: float
    p95_latency_ms: int
    job_failure_ratio: float
    oldest_queued_seconds: int


@dataclass(frozen=True)
class Secrets:
    """Secret stack config; values stay Pulumi secrets end to end."""

    openai_api_key: pulumi.Output[str] | None
    sentry_dsn: pulumi.Output[str] | None
    supabase_jwt_secret: pulumi.Output[str] | None
    supabase_db_password: pulumi.Output[str] | None


@dataclass(frozen=True)
class WorkloadNames:
    """What an environment's Cloud Run resources are called: every name starts with its prefix."""

    prefix: str

    @classmethod
    def of(cls, environment: str) -> WorkloadNames:
        return cls(f"liftoff-{environment}")

    @property
    def api(self) -> str:
        return f"{self.prefix}-api"

    @property
    def worker(self) -> str:
        return f"{self.prefix}-worker"

    @property
    def migrations(self) -> str:
        return f"{self.prefix}-migrate"

    @property
    def retention(self) -> str:
        return f"{self.prefix}-cleanup"


@dataclass(frozen=True)
class StackSettings:
    """Everything the program needs, validated."""

    project: str
    region: str
    environment: Environment
    image_tag: str | None
    supabase: SupabaseSettings
    redis: RedisSettings
    api: ApiSettings
    worker: WorkerSettings
    app: AppSettings
    retention: RetentionSettings
    alerts: AlertSettings
    secrets: Secrets
    usage: UsageSettings = field(default_factory=lambda: UsageSettings())
    release: ReleaseSettings = field(default_factory=ReleaseSettings)

    @property
    def names(self) -> WorkloadNames:
        return WorkloadNames.of(self.environment)

    @property
    def prefix(self) -> str:
        return self.names.prefix

    @property
    def api_service_name(self) -> str:
        return self.names.api

    @property
    def worker_pool_name(self) -> str:
        return self.names.worker

    @property
    def labels(self) -> dict[str, str]:
        return {"app": "liftoff", "env": self.environment}


class _Reader:
    """Typed access to one config object, recording problems instead of stopping at the first."""

    def __init__(self, problems: list[str], key: str, raw: Any) -> None:
        self.problems = problems
        self.key = key
        if raw is None:
            raw = {}
        if not isinstance(raw, Mapping):
            problems.append(f"{key}: must be an object, got {type(raw).__name__}")
            raw = {}
        self.raw: Mapping[str, Any] = raw

    def unknown(self, known: set[str]) -> None:
        for extra in sorted(set(self.raw) - known):
            self.problems.append(f"{self.key}.{extra}: unknown key (known: {', '.join(sorted(known))})")

    def value(
        self,
        name: str,
        kind: type[T],
        default: T | None = None,
        check: Callable[[T], str | None] | None = None,
    ) -> T:
        where = f"{self.key}.{name}"
        value = self.raw.get(name, default)
        if value is None:
            self.problems.append(f"{where}: is required")
            return default  # type: ignore[return-value]
        if kind is int and isinstance(value, bool) or not isinstance(value, kind):
            self.problems.append(f"{where}: must be {kind.__name__}, got {value!r}")
            return default  # type: ignore[return-value]
        if check is not None and (problem := check(value)) is not None:
            self.problems.append(f"{where}: {problem}")
        return value

    def number(self, name: str, default: float, check: Callable[[float], str | None]) -> float:
        """A float, written in YAML as either 0.5 or 1."""
        value = self.raw.get(name, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.problems.append(f"{self.key}.{name}: must be a number, got {value!r}")
            return default
        if (problem := check(float(value))) is not None:
            self.problems.append(f"{self.key}.{name}: {problem}")
        return float(value)

    def optional(self, name: str, kind: type[T]) -> T | None:
        if self.raw.get(name) is None:
            return None
        return self.value(name, kind)


def _between(low: int, high: int) -> Callable[[int], str | None]:
    return lambda v: None if low <= v <= high else f"must be from {low} to {high}, got {v}"


def _ratio(v: float) -> str | None:
    return None if 0 < v < 1 else f"must be between 0 and 1, got {v}"


def _one_of(options: frozenset[str] | set[str] | Mapping[str, Any]) -> Callable[[str], str | None]:
    return lambda v: None if v in options else f"{v!r} is not one of: {', '.join(sorted(options))}"


def _pattern(regex: re.Pattern[str], what: str) -> Callable[[str], str | None]:
    return lambda v: None if regex.match(v) else f"{v!r} is not {what}"


def _app_default(field: str) -> int:
    """The app's own default for one of its settings: the stack's default is the app's."""
    value = AppContract.model_fields[field].default
    if not isinstance(value, int):
        raise TypeError(f"app setting {field} has no whole-number default")
    return value


def _pinned_targets(
    reader: _Reader, name: str, service: str, problems: list[str], *, tags_allowed: bool = True
) -> tuple[TrafficTarget, ...] | None:
    """A traffic split the stack file pins by hand, or None when it leaves it to releases."""
    if reader.raw.get(name) is None:
        return None
    try:
        return parse_targets(
            reader.raw[name], key=f"{reader.key}.{name}", service=service, tags_allowed=tags_allowed
        )
    except TrafficError as exc:
        problems.append(str(exc))
        return None


def load(source: ConfigSource | None = None, *, stack: str | None = None) -> StackSettings:
    """Read and validate the whole configuration; ConfigError lists every problem."""
    source = source or PulumiConfig()
    stack = stack or pulumi.get_stack()
    problems: list[str] = []

    gcp_project = source.get("gcp", "project")
    if not isinstance(gcp_project, str) or not PROJECT_ID.match(gcp_project):
        problems.append(
            f"gcp:project: {gcp_project!r} is not a GCP project id (set it: pulumi config set gcp:project ID)"
        )
    region = source.get("gcp", "region")
    if region not in CLOUD_RUN_REGIONS:
        problems.append(
            f"gcp:region: {region!r} is not a Cloud Run region: {', '.join(sorted(CLOUD_RUN_REGIONS))}"
        )
    nearest = NEAREST_AWS_REGION.get(region, "us-east-1") if isinstance(region, str) else "us-east-1"

    environment = source.get(NAMESPACE, "environment") or stack
    if environment not in ("staging", "prod"):
        problems.append(f"{NAMESPACE}:environment: {environment!r} must be staging or prod")
    prod = environment == "prod"
    # Unset, the tag is derived from the image's sources (stacks/program.py): a tag that changes
    # with every commit would rebuild the image and show a diff in every preview.
    image_tag = source.get(NAMESPACE, "imageTag")
    if image_tag is not None and (not isinstance(image_tag, str) or not IMAGE_TAG.match(image_tag)):
        problems.append(f"{NAMESPACE}:imageTag: {image_tag!r} is not a Docker tag")

    sb = _Reader(problems, f"{NAMESPACE}:supabase", source.get(NAMESPACE, "supabase"))
    retired = {
        # The Management API ignores a plan in project creation: the organization's plan applies.
        "plan": "Supabase sets the plan per organization, not per project; remove this key",
        # The pooler host is read from the project's own pooler configuration.
        "poolerHost": "the pooler host now comes from the Management API; remove this key",
    }
    problems.extend(f"{sb.key}.{key}: {why}" for key, why in retired.items() if key in sb.raw)
    sb.unknown({"mode", "region", "organizationId", "projectRef", *retired})
    mode = sb.value("mode", str, "create", _one_of({"create", "adopt"}))
    supabase = SupabaseSettings(
        mode="adopt" if mode == "adopt" else "create",
        region=sb.value("region", str, nearest, _one_of(SUPABASE_REGIONS)),
        organization_id=sb.optional("organizationId", str),
        project_ref=sb.optional("projectRef", str),
    )
    if supabase.mode == "create" and not supabase.organization_id:
        problems.append(f"{NAMESPACE}:supabase.organizationId: is required when mode is create")
    if supabase.mode == "adopt" and not supabase.project_ref:
        problems.append(f"{NAMESPACE}:supabase.projectRef: is required when mode is adopt")

    rd = _Reader(problems, f"{NAMESPACE}:redis", source.get(NAMESPACE, "redis"))
    rd.unknown({"primaryRegion", "budget"})
    redis = RedisSettings(
        primary_region=rd.value("primaryRegion", str, nearest, _one_of(UPSTASH_REGIONS)),
        budget=rd.value("budget", int, 20, _between(1, 10_000)),
    )

    ap = _Reader(problems, f"{NAMESPACE}:api", source.get(NAMESPACE, "api"))
    ap.unknown(
        {
            "public",
            "invokers",
            "minInstances",
            "maxInstances",
            "concurrency",
            "cpu",
            "memory",
            "timeoutSeconds",
            "ingress",
            "deletionProtection",
            "traffic",
        }
    )
    traffic = _pinned_targets(ap, "traffic", f"liftoff-{environment}-api", problems)
    invokers = ap.raw.get("invokers", [])
    if not isinstance(invokers, list) or not all(isinstance(i, str) for i in invokers):
        problems.append(f"{NAMESPACE}:api.invokers: must be a list of IAM members")
        invokers = []
    api = ApiSettings(
        public=ap.value("public", bool, False),
        invokers=tuple(invokers),
        min_instances=ap.value("minInstances", int, 1 if prod else 0, _between(0, 1000)),
        max_instances=ap.value("maxInstances", int, 10, _between(1, 1000)),
        concurrency=ap.value("concurrency", int, 80, _between(1, 1000)),
        cpu=ap.value("cpu", str, "1", _pattern(CPU, "a CPU value (1-8, or millicores like 500m)")),
        memory=ap.value("memory", str, "512Mi", _pattern(MEMORY, "a memory size like 512Mi or 2Gi")),
        timeout_seconds=ap.value("timeoutSeconds", int, 300, _between(1, 3600)),
        ingress=INGRESS.get(ap.value("ingress", str, "all", _one_of(INGRESS)), "INGRESS_TRAFFIC_ALL"),
        deletion_protection=ap.value("deletionProtection", bool, prod),
        traffic=traffic,
    )
    if api.min_instances > api.max_instances:
        problems.append(
            f"{NAMESPACE}:api.minInstances: {api.min_instances} is above maxInstances {api.max_instances}"
        )
    if api.public and api.invokers:
        problems.append(f"{NAMESPACE}:api.invokers: a public API takes no invoker list")
    if prod and not api.deletion_protection:
        problems.append(f"{NAMESPACE}:api.deletionProtection: must be true in prod")

    wk = _Reader(problems, f"{NAMESPACE}:worker", source.get(NAMESPACE, "worker"))
    wk.unknown({"instances", "concurrency", "cpu", "memory", "split"})
    split = _pinned_targets(wk, "split", f"liftoff-{environment}-worker", problems, tags_allowed=False)
    worker = WorkerSettings(
        instances=wk.value("instances", int, 1, _between(0, 100)),
        concurrency=wk.value("concurrency", int, 4, _between(1, 256)),
        cpu=wk.value("cpu", str, "1", _pattern(CPU, "a CPU value (1-8, or millicores like 500m)")),
        memory=wk.value("memory", str, "512Mi", _pattern(MEMORY, "a memory size like 512Mi or 2Gi")),
        split=split,
    )

    ar = _Reader(problems, f"{NAMESPACE}:app", source.get(NAMESPACE, "app"))
    ar.unknown(
        {"aiProvider", "defaultModel", "logLevel", "tenantMaxActiveJobs", "tenantMaxSubmissionsPerMinute"}
    )
    provider = ar.value("aiProvider", str, "openai", _one_of({"local", "openai"}))
    app = AppSettings(
        ai_provider="local" if provider == "local" else "openai",
        default_model=ar.value("defaultModel", str, "gpt-4o-mini"),
        log_level=ar.value("logLevel", str, "INFO", _one_of({"DEBUG", "INFO", "WARNING", "ERROR"})),
        tenant_max_active_jobs=ar.value(
            "tenantMaxActiveJobs", int, _app_default("tenant_max_active_jobs"), _between(1, 1_000_000)
        ),
        tenant_max_submissions_per_minute=ar.value(
            "tenantMaxSubmissionsPerMinute",
            int,
            _app_default("tenant_max_submissions_per_minute"),
            _between(1, 1_000_000),
        ),
    )

    rt = _Reader(problems, f"{NAMESPACE}:retention", source.get(NAMESPACE, "retention"))
    rt.unknown({"days", "schedule"})
    retention = RetentionSettings(
        days=rt.value("days", int, 30, _between(1, 3650)),
        schedule=rt.value(
            "schedule",
            str,
            "17 3 * * *",
            lambda s: None if len(s.split()) == 5 else "must be a 5-field cron expression",
        ),
    )

    al = _Reader(problems, f"{NAMESPACE}:alerts", source.get(NAMESPACE, "alerts"))
    al.unknown({"email", "errorRatio", "p95LatencyMs", "jobFailureRatio", "oldestQueuedSeconds"})
    alerts = AlertSettings(
        email=al.value("email", str, None, _pattern(EMAIL, "an email address")),
        error_ratio=al.number("errorRatio", 0.05, _ratio),
        p95_latency_ms=al.value("p95LatencyMs", int, 2000, _between(1, 600_000)),
        job_failure_ratio=al.number("jobFailureRatio", 0.10, _ratio),
        oldest_queued_seconds=al.value("oldestQueuedSeconds", int, 300, _between(1, 86_400)),
    )

    secrets = Secrets(
        openai_api_key=source.get_secret(NAMESPACE, "openaiApiKey"),
        sentry_dsn=source.get_secret(NAMESPACE, "sentryDsn"),
        supabase_jwt_secret=source.get_secret(NAMESPACE, "supabaseJwtSecret"),
        supabase_db_password=source.get_secret(NAMESPACE, "supabaseDbPassword"),
    )
    if app.ai_provider == "openai" and secrets.openai_api_key is None:
        problems.append(
            f"{NAMESPACE}:openaiApiKey: is required when app.aiProvider is openai"
            f" (pulumi config set --secret {NAMESPACE}:openaiApiKey sk-...)"
        )
    if source.get_secret("supabase", "accessToken") is None:
        problems.append(
            f"{SUPABASE_TOKEN}: is required: the Supabase Management API token"
            f" (pulumi config set --secret {SUPABASE_TOKEN} sbp_...)"
        )
    if supabase.mode == "adopt" and secrets.supabase_db_password is None:
        problems.append(
            f"{NAMESPACE}:supabaseDbPassword: is required when supabase.mode is adopt (set it --secret)"
        )

    usage = usage_settings(source.get(NAMESPACE, "usage"), problems)
    release, release_problems = release_config.parse(source.get(NAMESPACE, "release"), cloud=True)
    problems.extend(release_problems)

    if problems:
        raise ConfigError(problems)
    return StackSettings(
        project=gcp_project,
        region=region,
        environment="prod" if prod else "staging",
        image_tag=image_tag,
        supabase=supabase,
        redis=redis,
        api=api,
        worker=worker,
        app=app,
        retention=retention,
        alerts=alerts,
        secrets=secrets,
        usage=usage,
        release=release,
    )


# --- Usage assumptions (`liftoff:usage`): what the cost estimate (stacks/cost.py) prices. ---
# They register nothing; they live here so that a typo fails `pulumi up` and `make cost` alike.


@dataclass(frozen=True)
class UsageSettings:
    """How much a stack is used in a month; README, "What it costs", explains each default."""

    requests_per_month: int = 1_000_000
    mean_request_ms: int = 200
    api_instance_starts_per_month: int = 1_000
    jobs_per_month: int = 100_000
    releases_per_month: int = 30
    migration_seconds: int = 60
    retention_seconds: int = 120
    image_mb: int = 250
    image_mb_per_release: int = 30
    redis_mb: int = 100
    database_gb: int = 1
    # The Supabase organization's plan: billed per organization, so not a property of the project.
    supabase_plan: str = "pro"


SUPABASE_PLANS = frozenset({"free", "pro"})
# key in the stack file -> (field, smallest, largest)
USAGE_KEYS: dict[str, tuple[str, int, int]] = {
    "requestsPerMonth": ("requests_per_month", 0, 100_000_000_000),
    "meanRequestMs": ("mean_request_ms", 1, 3_600_000),
    "apiInstanceStartsPerMonth": ("api_instance_starts_per_month", 0, 10_000_000),
    "jobsPerMonth": ("jobs_per_month", 0, 10_000_000_000),
    "releasesPerMonth": ("releases_per_month", 0, 10_000),
    "migrationSeconds": ("migration_seconds", 0, 86_400),
    "retentionSeconds": ("retention_seconds", 0, 86_400),
    "imageMb": ("image_mb", 1, 100_000),
    "imageMbPerRelease": ("image_mb_per_release", 0, 100_000),
    "redisMb": ("redis_mb", 0, 100_000_000),
    "databaseGb": ("database_gb", 0, 100_000),
}


def usage_settings(raw: Any, problems: list[str] | None = None) -> UsageSettings:
    """`liftoff:usage` validated; problems are appended to `problems`, or raised as ConfigError."""
    found: list[str] = []
    reader = _Reader(found, f"{NAMESPACE}:usage", raw)
    reader.unknown({*USAGE_KEYS, "supabasePlan"})
    defaults = UsageSettings()
    values: dict[str, Any] = {
        name: reader.value(key, int, getattr(defaults, name), _between(low, high))
        for key, (name, low, high) in USAGE_KEYS.items()
    }
    values["supabase_plan"] = reader.value(
        "supabasePlan", str, defaults.supabase_plan, _one_of(SUPABASE_PLANS)
    )
    if problems is not None:
        problems.extend(found)
    elif found:
        raise ConfigError(found)
    return UsageSettings(**values) if not found else defaults
