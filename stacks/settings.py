"""The stack's configuration, read once into one typed object, or every problem named by its key.

Each `liftoff:<section>` object is a pydantic model: camelCase keys, no unknown key, and the
rules of components/rules.py, the same ones the components check their arguments with.
Nothing here registers a resource: an invalid stack fails before anything is created.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from fractions import Fraction
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Protocol, TypeVar, get_args

import pulumi
import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic_core import ErrorDetails, PydanticCustomError

from app.scaler.policy import step_floor
from app.settings import Settings as AppContract
from components.rules import (
    INGRESS,
    Between,
    Concurrency,
    Cpu,
    Cron,
    Email,
    ImageTag,
    LatencyMs,
    Matches,
    MaxInstances,
    Memory,
    MinInstances,
    PoolInstances,
    QueueAgeSeconds,
    Ratio,
    RequestTimeoutSeconds,
    SupabaseRegion,
    UpstashBudget,
    UpstashRegion,
    explain,
    instances_in_order,
    one_of,
    public_takes_no_invokers,
)
from components.supabase_api import TOKEN_CONFIG_KEY as SUPABASE_TOKEN
from components.traffic import TrafficError, TrafficTarget, parse_targets
from stacks.release import config as release_config
from stacks.release.config import KEY as RELEASE_KEY
from stacks.release.config import MAX_SOAK_SECONDS, ReleaseSettings

NAMESPACE = "liftoff"
PROJECT_ID = re.compile(r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$")
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
DEFAULT_AWS_REGION = "us-east-1"
Environment = Literal["staging", "prod"]
SupabaseMode = Literal["create", "adopt"]
M = TypeVar("M", bound=BaseModel)


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
class Place:
    """What some defaults and rules depend on: the environment, and the region the stack runs in."""

    environment: str = "staging"
    region: object = None

    @property
    def prod(self) -> bool:
        return self.environment == "prod"

    @property
    def nearest(self) -> str:
        """The Supabase and Upstash region nearest the stack's Cloud Run region."""
        region = self.region if isinstance(self.region, str) else ""
        return NEAREST_AWS_REGION.get(region, DEFAULT_AWS_REGION)


def _place(info: ValidationInfo) -> Place:
    return info.context if isinstance(info.context, Place) else Place()


def _with_defaults(data: Any, **defaults: Any) -> Any:
    """An object's keys over defaults that depend on the place; anything else as it is."""
    return {**defaults, **data} if isinstance(data, Mapping) else data


def _derived(description: str, default: str) -> Any:
    """A key whose default depends on the place (filled in before validation), as `default` says."""
    return Field(description=description, json_schema_extra={"default": default})


def _keyed(found: list[str]) -> PydanticCustomError:
    """Problems that start with their key inside the section (`traffic[0].tag: ...`), all at once."""
    return PydanticCustomError("keyed", "{message}", {"message": "; ".join(found), "problems": found})


def _refuse(problem: str | None) -> None:
    """Fail the field being validated with `problem`, if there is one."""
    if problem is not None:
        raise ValueError(problem)


def _problems(problems: Mapping[str, str | None]) -> None:
    """Raise every cross-key problem of a section at once, each named by its key in the section."""
    found = [f"{key}: {problem}" for key, problem in problems.items() if problem is not None]
    if found:
        raise _keyed(found)


def _app_default(name: str) -> int:
    """The app's own default for one of its settings: the stack's default is the app's."""
    value = AppContract.model_fields[name].default
    if not isinstance(value, int):
        raise TypeError(f"app setting {name} has no whole-number default")
    return value


def _app_bounds(name: str) -> Between:
    """The app's own bounds for one of its settings: the stack accepts what the app accepts."""
    metadata = AppContract.model_fields[name].metadata
    low = next(int(m.ge) for m in metadata if hasattr(m, "ge"))
    high = next(int(m.le) for m in metadata if hasattr(m, "le"))
    return Between(low, high)


def _app_choices(name: str) -> frozenset[str]:
    """The values the app accepts for one of its settings (a Literal): the stack accepts the same."""
    return frozenset(get_args(AppContract.model_fields[name].annotation))


def _iam_members(value: Any) -> Any:
    if not isinstance(value, list | tuple) or not all(isinstance(m, str) for m in value):
        raise ValueError("must be a list of IAM members")
    return tuple(value)


def _cloud_run_region(value: Any) -> Any:
    if not isinstance(value, str) or value not in CLOUD_RUN_REGIONS:
        raise ValueError(f"{value!r} is not a Cloud Run region: {', '.join(sorted(CLOUD_RUN_REGIONS))}")
    return value


def _environment(value: Any) -> Any:
    if value not in get_args(Environment):
        raise ValueError(f"{value!r} must be {' or '.join(get_args(Environment))}")
    return value


def _traffic(raw: Any, key: str, service: str, *, tags_allowed: bool) -> tuple[TrafficTarget, ...] | None:
    """A split the stack file pins by hand, or None when it leaves it to releases."""
    if raw is None:
        return None
    try:
        return parse_targets(raw, key=key, service=service, tags_allowed=tags_allowed)
    except TrafficError as error:
        raise _keyed([str(error)]) from None


class StackKeys(BaseModel):
    """The stack's top-level keys: where it runs, in which environment, with which image."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    project: Annotated[
        str,
        BeforeValidator(Matches(PROJECT_ID, "a GCP project id (set it: pulumi config set gcp:project ID)")),
    ] = Field(alias="gcp:project", description="The GCP project the stack deploys to.")
    region: Annotated[str, BeforeValidator(_cloud_run_region)] = Field(
        alias="gcp:region",
        description="The Cloud Run region; Supabase and Upstash default to the nearest AWS region.",
        json_schema_extra={"constraint": "a Cloud Run region (" + ", ".join(sorted(CLOUD_RUN_REGIONS)) + ")"},
    )
    environment: Annotated[Environment, BeforeValidator(_environment)] = Field(
        alias=f"{NAMESPACE}:environment",
        description="`staging` or `prod`; prod gets the stricter defaults noted below.",
        json_schema_extra={"default": "the stack's name"},
    )
    # Unset, the tag is derived from the image's sources (stacks/program.py): a tag that changes
    # with every commit would rebuild the image and show a diff in every preview.
    image_tag: ImageTag | None = Field(
        None,
        alias=f"{NAMESPACE}:imageTag",
        description="The image's tag; unset, it is derived from the image's sources.",
    )


class Section(BaseModel):
    """One `liftoff:<section>` object: camelCase keys, nothing unknown, no type coerced."""

    # Python builds a section by field name (UsageSettings(requests_per_month=...)); a stack file's
    # keys are validated by their camelCase alias only (see _validate).
    model_config = ConfigDict(
        extra="forbid", frozen=True, strict=True, alias_generator=to_camel, populate_by_name=True
    )


class SupabaseSettings(Section):
    """`liftoff:supabase`: the Supabase project, created in an organization or adopted."""

    # Keys that used to mean something, each with why it is gone; none is read.
    RETIRED: ClassVar[dict[str, str]] = {
        # The Management API ignores a plan in project creation: the organization's plan applies.
        "plan": "Supabase sets the plan per organization, not per project; remove this key",
        # The pooler host is read from the project's own pooler configuration.
        "pooler_host": "the pooler host now comes from the Management API; remove this key",
    }

    mode: Annotated[SupabaseMode, BeforeValidator(one_of(get_args(SupabaseMode)))] = Field(
        "create", description="`create` a project in `organizationId`, or `adopt` the one at `projectRef`."
    )
    region: SupabaseRegion = _derived("The region of a created project.", "nearest to `gcp:region`")
    organization_id: str | None = Field(
        None, validate_default=True, description="The organization's slug; required when mode is `create`."
    )
    project_ref: str | None = Field(
        None, validate_default=True, description="The adopted project's ref; required when mode is `adopt`."
    )
    plan: Any = Field(None, exclude=True)
    pooler_host: Any = Field(None, exclude=True)

    @model_validator(mode="before")
    @classmethod
    def _nearest_region(cls, data: Any, info: ValidationInfo) -> Any:
        return _with_defaults(data, region=_place(info).nearest)

    @field_validator("plan", "pooler_host")
    @classmethod
    def _retired(cls, value: Any, info: ValidationInfo) -> Any:
        raise ValueError(cls.RETIRED[str(info.field_name)])

    @field_validator("organization_id", "project_ref")
    @classmethod
    def _mode_has_its_key(cls, value: str | None, info: ValidationInfo) -> str | None:
        mode = {"organization_id": "create", "project_ref": "adopt"}[str(info.field_name)]
        if info.data.get("mode") == mode and not value:
            raise ValueError(f"is required when mode is {mode}")
        return value


class RedisSettings(Section):
    """`liftoff:redis`: the Upstash database behind the queue's wake-up signal."""

    primary_region: UpstashRegion = _derived(
        "Where the global database's primary runs.", "nearest to `gcp:region`"
    )
    budget: UpstashBudget = Field(20, description="Monthly spend in USD at which Upstash stops serving.")

    @model_validator(mode="before")
    @classmethod
    def _nearest_region(cls, data: Any, info: ValidationInfo) -> Any:
        return _with_defaults(data, primaryRegion=_place(info).nearest)


class ApiSettings(Section):
    """`liftoff:api`: the API's Cloud Run service."""

    public: bool = Field(
        False, description="Anyone may call the API (`allUsers`); otherwise only `invokers`."
    )
    invokers: Annotated[tuple[str, ...], BeforeValidator(_iam_members)] = Field(
        (), description="IAM members that may call a private API, such as `group:team@example.com`."
    )
    min_instances: MinInstances = _derived("Instances kept warm.", "`1` in prod, `0` in staging")
    max_instances: MaxInstances = Field(10, description="Most instances the service scales out to.")
    concurrency: Concurrency = Field(80, description="Requests one instance serves at once.")
    cpu: Cpu = Field("1", description="CPU limit of one instance.")
    memory: Memory = Field("512Mi", description="Memory limit of one instance.")
    timeout_seconds: RequestTimeoutSeconds = Field(300, description="Longest a request may take.")
    ingress: Annotated[str, AfterValidator(one_of(INGRESS)), AfterValidator(INGRESS.__getitem__)] = Field(
        "all", validate_default=True, description="Where requests may come from."
    )
    deletion_protection: bool = _derived(
        "Cloud Run refuses to delete the service; must be true in prod.", "`true` in prod, `false` in staging"
    )
    # None: not declared in the stack file, so releases manage it (stacks/release/).
    traffic: tuple[TrafficTarget, ...] | None = Field(
        None,
        description="A split pinned by hand, as a list of `{revision, percent, tag}`; unset, releases"
        " (`make release`) move the traffic.",
    )

    @model_validator(mode="before")
    @classmethod
    def _environment_defaults(cls, data: Any, info: ValidationInfo) -> Any:
        prod = _place(info).prod
        return _with_defaults(data, minInstances=1 if prod else 0, deletionProtection=prod)

    @field_validator("traffic", mode="plain")
    @classmethod
    def _pinned(cls, raw: Any, info: ValidationInfo) -> tuple[TrafficTarget, ...] | None:
        service = WorkloadNames.of(_place(info).environment).api
        return _traffic(raw, "traffic", service, tags_allowed=True)

    @field_validator("invokers")
    @classmethod
    def _private_only(cls, invokers: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        _refuse(public_takes_no_invokers(info.data.get("public", False), invokers))
        return invokers

    @field_validator("max_instances")
    @classmethod
    def _min_not_above(cls, maximum: int, info: ValidationInfo) -> int:
        minimum = info.data.get("min_instances")
        if minimum is not None:
            _problems({"minInstances": instances_in_order(minimum, maximum, "maxInstances")})
        return maximum

    @field_validator("deletion_protection")
    @classmethod
    def _protected_in_prod(cls, protected: bool, info: ValidationInfo) -> bool:
        _refuse("must be true in prod" if _place(info).prod and not protected else None)
        return protected


class WorkerSettings(Section):
    """`liftoff:worker`: the worker's Cloud Run worker pool, on demand or at a fixed count.

    On demand (no `instances`), the stack's scaler (components/scaler.py, app/scaler/) sets the
    pool's instance count: `minInstances` while no job is queued or running for `idleSeconds`, and
    what the queue needs up to `maxInstances` as soon as one is.
    """

    instances: PoolInstances | None = Field(
        None,
        description="A fixed instance count, with no scaler; unset, the pool scales on demand"
        " between `minInstances` and `maxInstances`.",
    )
    min_instances: PoolInstances = Field(
        0, description="On demand: the instances kept while no job is queued or running (a floor)."
    )
    # 10 gives each revision of the default steps' 10 % split an instance (split_instance_problems).
    max_instances: Annotated[int, AfterValidator(Between(1, 100))] = Field(
        10, description="On demand: the most instances the queue (or a release's split) scales the pool to."
    )
    idle_seconds: Annotated[int, AfterValidator(Between(60, 86_400))] = Field(
        300, description="On demand: how long no job is queued or running before the pool goes to its floor."
    )
    concurrency: Annotated[int, AfterValidator(_app_bounds("worker_concurrency"))] = Field(
        _app_default("worker_concurrency"),
        description="Jobs one instance runs at once (`WORKER_CONCURRENCY`).",
    )
    cpu: Cpu = Field("1", description="CPU limit of one instance.")
    memory: Memory = Field("512Mi", description="Memory limit of one instance.")
    # None: not declared in the stack file, so releases manage it (stacks/release/).
    split: tuple[TrafficTarget, ...] | None = Field(
        None,
        description="An instance split pinned by hand, as a list of `{revision, percent}`; unset,"
        " releases (`make release`) move it.",
    )

    @field_validator("split", mode="plain")
    @classmethod
    def _pinned(cls, raw: Any, info: ValidationInfo) -> tuple[TrafficTarget, ...] | None:
        service = WorkloadNames.of(_place(info).environment).worker
        return _traffic(raw, "split", service, tags_allowed=False)

    @model_validator(mode="after")
    def _one_way_to_scale(self) -> WorkerSettings:
        on_demand = {"min_instances", "max_instances", "idle_seconds"} & self.model_fields_set
        if self.instances is not None and on_demand:
            keys = ", ".join(sorted(to_camel(k) for k in on_demand))
            _problems({"instances": f"a fixed count cannot be declared with {keys}: remove one or the other"})
        if self.min_instances > self.max_instances:
            _problems(
                {"minInstances": instances_in_order(self.min_instances, self.max_instances, "maxInstances")}
            )
        return self

    @property
    def on_demand(self) -> bool:
        """Whether a scaler sets the instance count (no fixed `instances`)."""
        return self.instances is None

    @property
    def ceiling(self) -> int:
        """The most instances the pool runs: the fixed count, or maxInstances."""
        return self.max_instances if self.instances is None else self.instances


# The app's own limit is unbounded; a stack's is a number an organization could plausibly need.
TENANT_LIMIT = Between(1, 1_000_000)


class AppSettings(Section):
    """`liftoff:app`: the app's settings that differ per stack."""

    ai_provider: Annotated[str, BeforeValidator(one_of(_app_choices("ai_provider")))] = Field(
        "openai", description="Generation provider (`AI_PROVIDER`); `openai` needs `liftoff:openaiApiKey`."
    )
    default_model: str = Field("gpt-4o-mini", description="Model used when a request names none.")
    log_level: Annotated[str, BeforeValidator(one_of(_app_choices("log_level")))] = Field(
        "INFO", description="Minimum log severity."
    )
    # Per-tenant limits that protect AI spend (the app's TENANT_* settings; migrate applies them).
    tenant_max_active_jobs: Annotated[int, AfterValidator(TENANT_LIMIT)] = Field(
        _app_default("tenant_max_active_jobs"),
        description="Jobs an organization may have queued or running at once.",
    )
    tenant_max_submissions_per_minute: Annotated[int, AfterValidator(TENANT_LIMIT)] = Field(
        _app_default("tenant_max_submissions_per_minute"),
        description="Jobs an organization may submit in any 60 seconds.",
    )


class RetentionSettings(Section):
    """`liftoff:retention`: the scheduled cleanup of old generation logs."""

    days: Annotated[int, AfterValidator(_app_bounds("retention_days"))] = Field(
        _app_default("retention_days"), description="Age in days after which generation logs are deleted."
    )
    schedule: Cron = Field("17 3 * * *", description="When the cleanup runs (Cloud Scheduler, UTC).")


class AlertSettings(Section):
    """`liftoff:alerts`: who is paged, and at which thresholds."""

    email: Email = Field(description="Where alerts are sent.")
    error_ratio: Ratio = Field(0.05, description="Share of API requests answered 5xx that pages.")
    p95_latency_ms: LatencyMs = Field(2000, description="API p95 latency in milliseconds that pages.")
    job_failure_ratio: Ratio = Field(0.10, description="Share of failed jobs that pages.")
    oldest_queued_seconds: QueueAgeSeconds = Field(
        300, description="Age in seconds of the oldest queued job that pages."
    )


def _secret(key: str, description: str) -> Any:
    return field(metadata={"key": key, "description": description})


@dataclass(frozen=True)
class Secrets:
    """Secret stack config; values stay Pulumi secrets end to end."""

    openai_api_key: pulumi.Output[str] | None = _secret(
        "openaiApiKey", "The OpenAI API key; required when `app.aiProvider` is `openai`."
    )
    sentry_dsn: pulumi.Output[str] | None = _secret("sentryDsn", "Turns on Sentry error reporting.")
    supabase_jwt_secret: pulumi.Output[str] | None = _secret(
        "supabaseJwtSecret", "The Supabase project's JWT secret, for HS256 tokens."
    )
    supabase_db_password: pulumi.Output[str] | None = _secret(
        "supabaseDbPassword",
        "The adopted project's database password; required when `supabase.mode` is `adopt`.",
    )

    @classmethod
    def read(cls, source: ConfigSource) -> Secrets:
        return cls(**{f.name: source.get_secret(NAMESPACE, f.metadata["key"]) for f in fields(cls)})


@dataclass(frozen=True)
class WorkloadNames:
    """What an environment's resources are called: every name starts with its prefix.

    The prefix carries the environment, so two stacks can share a GCP project: every id that must
    be unique in a project (or in a project's region) starts with it, from the service accounts,
    secrets and log-based metrics the components name after it to the Cloud Run workloads and the
    image repository named here.
    """

    prefix: str

    @classmethod
    def of(cls, environment: str) -> WorkloadNames:
        return cls(f"liftoff-{environment}")

    @property
    def repository(self) -> str:
        """The Artifact Registry repository of the stack's images."""
        return self.prefix

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

    @property
    def scaler(self) -> str:
        """The worker pool's scaler service (components/scaler.py)."""
        return f"{self.prefix}-scaler"


# --- Usage assumptions (`liftoff:usage`): what the cost estimate (stacks/cost.py) prices. ---
# They register nothing; they live here so that a typo fails `pulumi up` and `make cost` alike.

SUPABASE_PLANS = frozenset({"free", "pro"})


class UsageSettings(Section):
    """How much a stack is used in a month; docs/operations.md, "Cost", explains each default."""

    requests_per_month: Annotated[int, AfterValidator(Between(0, 100_000_000_000))] = Field(
        1_000_000, description="API requests."
    )
    mean_request_ms: Annotated[int, AfterValidator(Between(1, 3_600_000))] = Field(
        200, description="Mean time an instance spends on a request, in milliseconds."
    )
    api_instance_starts_per_month: Annotated[int, AfterValidator(Between(0, 10_000_000))] = Field(
        1_000, description="API instance starts (cold starts and scale-outs)."
    )
    jobs_per_month: Annotated[int, AfterValidator(Between(0, 10_000_000_000))] = Field(
        100_000, description="Jobs run."
    )
    mean_job_seconds: Annotated[int, AfterValidator(Between(1, 86_400))] = Field(
        30, description="Mean length of one job attempt: the worker instance time jobs take."
    )
    job_bursts_per_month: Annotated[int, AfterValidator(Between(0, 10_000_000))] = Field(
        300,
        description="Busy periods of an on-demand worker pool: each takes it above its floor (from zero"
        " at a floor of 0), starting an instance that stays up for the idle period after the last job.",
    )
    worker_start_seconds: Annotated[int, AfterValidator(Between(0, 3_600))] = Field(
        20,
        description="An instance's start until it runs a job, billed while it starts (the cold start)."
        " An estimate: Google documents no start time for CPU instances.",
    )
    scaler_request_ms: Annotated[int, AfterValidator(Between(1, 30_000))] = Field(
        300, description="Time the scaler spends on one reconcile or wake request, in milliseconds."
    )
    releases_per_month: Annotated[int, AfterValidator(Between(0, 10_000))] = Field(
        30, description="Releases (each builds an image and runs the migrations)."
    )
    migration_seconds: Annotated[int, AfterValidator(Between(0, 86_400))] = Field(
        60, description="Length of one migrations run."
    )
    retention_seconds: Annotated[int, AfterValidator(Between(0, 86_400))] = Field(
        120, description="Length of one cleanup run."
    )
    image_mb: Annotated[int, AfterValidator(Between(1, 100_000))] = Field(
        250, description="Size of the image in Artifact Registry."
    )
    image_mb_per_release: Annotated[int, AfterValidator(Between(0, 100_000))] = Field(
        30, description="Layers a release adds to the registry."
    )
    redis_mb: Annotated[int, AfterValidator(Between(0, 100_000_000))] = Field(
        100, description="Data moved through Redis."
    )
    database_gb: Annotated[int, AfterValidator(Between(0, 100_000))] = Field(
        1, description="Size of the Postgres database."
    )
    # The Supabase organization's plan: billed per organization, so not a property of the project.
    supabase_plan: Annotated[str, AfterValidator(one_of(SUPABASE_PLANS))] = Field(
        "pro", description="The Supabase organization's plan."
    )


def _bounds(model: type[BaseModel]) -> dict[str, tuple[str, int, int]]:
    """Each whole-number key of `model`: its field and its bounds, from the field's rule."""
    found = {}
    for name, info in model.model_fields.items():
        rules = [m.func for m in info.metadata if isinstance(m, AfterValidator)]
        for rule in rules:
            if isinstance(rule, Between) and info.alias:
                found[info.alias] = (name, rule.low, rule.high)
    return found


# key in the stack file -> (field, smallest, largest)
USAGE_KEYS: dict[str, tuple[str, int, int]] = _bounds(UsageSettings)

# --- Release settings at the declared traffic: a release that can never be judged is refused. ---

# The price file, whose `hoursPerMonth` is the cost estimate's month (stacks/cost.py's PriceBook).
PRICES = Path(__file__).with_name("prices.yaml")


@functools.cache
def seconds_per_month(prices: Path = PRICES) -> Fraction:
    """A month as the cost estimate counts it (the price file's `hoursPerMonth`), in seconds."""
    return Fraction(str(yaml.safe_load(prices.read_text())["hoursPerMonth"])) * 3600


def release_traffic_problems(release: ReleaseSettings, usage: UsageSettings) -> list[str]:
    """The first release step, if it could not reach its minimums at the stack's declared traffic.

    How a step is judged (stacks/release/controller.py, `Controller._soak`, `_wait` and
    `_inconclusive`; stacks/release/gates.py, `evaluate` and `evaluate_jobs`): the candidate API
    revision's requests count from when its share moves, and so do the candidate worker
    revision's finished attempts; the gates wait until they reach `minRequests` and
    `minJobAttempts`, and a step still short once `maxSoakSeconds` of its traffic is readable
    (three soaks when unset: `wait_limit_seconds`; the controller waits out Cloud Monitoring's
    delay on top) is inconclusive. At the mean rates the stack declares, the candidate then has
    requestsPerMonth (jobsPerMonth) / seconds a month × the step's share × maxSoakSeconds of
    them. Every step waits as long, and steps rise strictly (`ReleaseSettings.steps`), so the
    first is the quietest: when it can be judged, all can.

    Synthetic probes (`synthetic`) count too, as the controller sends them: from the first poll
    that finds the step short, `rate` a second, all to the candidate API's tag URL, half of them
    jobs (when requests and jobs are both short) taken at the candidate worker's share, and never
    more than `budget` in the release.

    Each part is checked where the stack file declares its traffic (the defaults are the cost
    estimate's placeholders, not the stack's traffic) and rolls an inconclusive step back:
    `promote` is the stack's own choice.
    """
    if release.on_inconclusive == "promote":
        return []
    problems = []
    probes = _probes(release)
    if "requests_per_month" in usage.model_fields_set:
        rate = usage.requests_per_month / seconds_per_month()
        seen = _step_requests(rate, release.steps[0], release.wait_limit_seconds) + probes
        if seen < release.min_requests:
            problems.append(_unjudgeable(release, usage.requests_per_month, rate))
    if "jobs_per_month" in usage.model_fields_set and release.min_job_attempts > 0:
        rate = usage.jobs_per_month / seconds_per_month()
        first, wait = release.steps[0], release.wait_limit_seconds
        seen = _step_requests(rate, first, wait) + probes / 2 * first / 100
        if seen < release.min_job_attempts:
            problems.append(
                f"{RELEASE_KEY}.minJobAttempts: {release.min_job_attempts:,} finished attempts cannot be"
                f" reached by the candidate worker in the first step ({first} %) at the jobs"
                f" {NAMESPACE}:usage.jobsPerMonth declares: {usage.jobs_per_month:,} a month"
                f" ({float(rate):.3g} a second) × {first} % × maxSoakSeconds {wait:,} s"
                f"{_with_probes(probes)} is about {float(seen):,.1f}, so with onInconclusive rollback"
                f" every release changing the worker would roll back as inconclusive;"
                f" {_lower_attempts(seen)}declare synthetic traffic ({RELEASE_KEY}.synthetic), or set"
                " onInconclusive: promote"
            )
    return problems


def split_instance_problems(worker: WorkerSettings, release: ReleaseSettings) -> list[str]:
    """A release step whose split the pool's ceiling cannot give each revision an instance of.

    A worker pool's instances go to its revisions in proportion to the split (app/scaler/policy.py,
    `instances_for_share`); at a step of p % the candidate and the stable revision each need one, so
    the pool must be able to run `step_floor(p)` instances, or one of them runs no job and the
    step is judged on nothing. The scaler raises the count to that floor whenever there is work;
    a fixed count must already be there.
    """
    split_steps = [p for p in release.steps if p < 100]
    if not split_steps:
        return []
    needed = max(step_floor(p) for p in split_steps)
    if worker.ceiling >= needed:
        return []
    step = min(split_steps, key=lambda p: min(p, 100 - p))
    key = "maxInstances" if worker.on_demand else "instances"
    return [
        f"{NAMESPACE}:worker.{key}: {worker.ceiling} instance(s) cannot give both revisions of the"
        f" {RELEASE_KEY}.steps {step} % step an instance: the pool's instances are split in proportion,"
        f" so a {min(step, 100 - step)} % share needs {needed}; raise {key} to {needed} or change the steps"
    ]


def _lower_attempts(seen: Fraction) -> str:
    """The way out by a lower minJobAttempts, when one would still judge something (0 would not)."""
    return f"lower minJobAttempts to {math.floor(seen):,}, " if seen >= 1 else ""


def _probes(release: ReleaseSettings) -> Fraction:
    """The probes the controller can send in the first step: from its first poll to the end of
    maxSoakSeconds at `rate`, within the budget (0 when none are declared)."""
    synthetic = release.synthetic
    if not synthetic.enabled:
        return Fraction(0)
    poll = max(1.0, release.soak_seconds / 5)
    seconds = max(0.0, release.wait_limit_seconds - poll)
    return min(Fraction(synthetic.rate) * Fraction(seconds), Fraction(synthetic.budget))


def _with_probes(probes: Fraction) -> str:
    return f" plus half of {float(probes):,.0f} probes at its share" if probes else ""


def _step_requests(rate: Fraction, percent: int, seconds: int) -> Fraction:
    """The candidate's requests in `seconds` of a step at `percent` of `rate` requests a second."""
    return rate * percent / 100 * seconds


def _unjudgeable(release: ReleaseSettings, per_month: int, rate: Fraction) -> str:
    """The problem: the keys, the numbers, and each way out with the value that would do."""
    first, wait = release.steps[0], release.wait_limit_seconds
    unset = "" if release.max_soak_seconds is not None else " (unset: 3 × soakSeconds)"
    hours = float(seconds_per_month() / 3600)
    return (
        f"{RELEASE_KEY}.minRequests: {release.min_requests:,} requests cannot be reached in the first"
        f" step ({first} %) at the traffic {NAMESPACE}:usage.requestsPerMonth declares: {per_month:,}"
        f" requests a month ({float(rate):.3g} a second over a {hours:g}-hour month) × {first} %"
        f" × maxSoakSeconds {wait:,} s{unset} is about {float(_step_requests(rate, first, wait)):,.1f}"
        f" requests, so with onInconclusive rollback every release would roll back as inconclusive;"
        f" {_ways_out(release, rate)}"
    )


def _ways_out(release: ReleaseSettings, rate: Fraction) -> str:
    """What would let the first step reach `minRequests`, each at the value that just does."""
    first, wait, needed = release.steps[0], release.wait_limit_seconds, release.min_requests
    ways = []
    if rate > 0:
        # The rule solved for the soak, then for the share: offered where the key allows it.
        longer = math.ceil(needed / _step_requests(rate, first, 1))
        if longer <= MAX_SOAK_SECONDS:
            ways.append(f"raise maxSoakSeconds to {longer:,}")
        larger = math.ceil(needed / _step_requests(rate, 1, wait))
        if larger <= 100:
            ways.append(f"give the first step {larger} % or more")
    ways.append(f"lower minRequests to {math.floor(_step_requests(rate, first, wait)):,}")
    return ", ".join(ways) + " or set onInconclusive: promote"


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
    usage: UsageSettings = field(default_factory=UsageSettings)
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


# `liftoff:<key>` -> the section the program reads from it (usage and release are read on their own).
SECTIONS: dict[str, type[Section]] = {
    "supabase": SupabaseSettings,
    "redis": RedisSettings,
    "api": ApiSettings,
    "worker": WorkerSettings,
    "app": AppSettings,
    "retention": RetentionSettings,
    "alerts": AlertSettings,
}


def load(source: ConfigSource | None = None, *, stack: str | None = None) -> StackSettings:
    """Read and validate the whole configuration; ConfigError lists every problem."""
    source = source or PulumiConfig()
    problems: list[str] = []
    raw_keys = _top_level(source, stack or pulumi.get_stack())
    keys = _validate(StackKeys, raw_keys, "", Place(), problems)
    place = Place(str(raw_keys[f"{NAMESPACE}:environment"]), raw_keys["gcp:region"])
    sections: dict[str, Any] = {
        name: _validate(model, source.get(NAMESPACE, name), f"{NAMESPACE}:{name}", place, problems)
        for name, model in SECTIONS.items()
    }
    secrets = Secrets.read(source)
    problems.extend(_secret_problems(source, secrets))
    usage = usage_settings(source.get(NAMESPACE, "usage"), problems)
    release, release_problems = release_config.parse(source.get(NAMESPACE, "release"), cloud=True)
    problems.extend(release_problems or release_traffic_problems(release, usage))
    if sections["worker"] is not None and not release_problems:
        problems.extend(split_instance_problems(sections["worker"], release))
    if problems or keys is None:
        raise ConfigError(problems)
    return StackSettings(
        project=keys.project,
        region=keys.region,
        environment=keys.environment,
        image_tag=keys.image_tag,
        secrets=secrets,
        usage=usage,
        release=release,
        **sections,
    )


def _top_level(source: ConfigSource, stack: str) -> dict[str, Any]:
    return {
        "gcp:project": source.get("gcp", "project"),
        "gcp:region": source.get("gcp", "region"),
        f"{NAMESPACE}:environment": source.get(NAMESPACE, "environment") or stack,
        f"{NAMESPACE}:imageTag": source.get(NAMESPACE, "imageTag"),
    }


def _validate(model: type[M], raw: Any, key: str, place: Place, problems: list[str]) -> M | None:
    """`raw` as a `model`, or None with each problem appended, named by its key under `key`."""
    try:
        # By alias only: the stack file spells keys in camelCase, and `min_instances` there is unknown.
        return model.model_validate({} if raw is None else raw, context=place, by_alias=True, by_name=False)
    except ValidationError as error:
        problems.extend(problem for e in error.errors() for problem in _named(model, key, e))
        return None


def _named(model: type[BaseModel], key: str, error: ErrorDetails) -> list[str]:
    """One pydantic error as `liftoff:api.minInstances: what is wrong`, or several for a section's."""
    if error["type"] == "keyed":
        return [_join(key, problem) for problem in (error.get("ctx") or {})["problems"]]
    message = explain(error)
    parts = [str(part) for part in error["loc"] if not isinstance(part, int)]
    if error["type"] == "extra_forbidden":
        known = sorted(str(f.alias or name) for name, f in model.model_fields.items() if not f.exclude)
        message += f" (known: {', '.join(known)})"
        # An unknown key is named as the stack file spells it, even where it is a field's Python name.
        path = ".".join([*(_alias(model, part) for part in parts[:-1]), *parts[-1:]])
    else:
        path = ".".join(_alias(model, part) for part in parts)
    return [f"{_join(key, path)}: {message}"]


def _alias(model: type[BaseModel], part: str | int) -> str:
    """A key as the stack file spells it: a default's error is located by the field's own name."""
    info = model.model_fields.get(str(part))
    return info.alias if info is not None and info.alias else str(part)


def _join(key: str, path: str) -> str:
    return ".".join(part for part in (key, path) if part)


def _secret_problems(source: ConfigSource, secrets: Secrets) -> list[str]:
    """The secrets that the rest of the configuration needs, and that are not set."""
    problems = []
    if _raw_value(source, "app", "aiProvider") != "local" and secrets.openai_api_key is None:
        problems.append(
            f"{NAMESPACE}:openaiApiKey: is required when app.aiProvider is openai"
            f" (pulumi config set --secret {NAMESPACE}:openaiApiKey sk-...)"
        )
    if source.get_secret("supabase", "accessToken") is None:
        problems.append(
            f"{SUPABASE_TOKEN}: is required: the Supabase Management API token"
            f" (pulumi config set --secret {SUPABASE_TOKEN} sbp_...)"
        )
    if _raw_value(source, "supabase", "mode") == "adopt" and secrets.supabase_db_password is None:
        problems.append(
            f"{NAMESPACE}:supabaseDbPassword: is required when supabase.mode is adopt (set it --secret)"
        )
    return problems


def _raw_value(source: ConfigSource, section: str, key: str) -> Any:
    """A key of a section as the stack file has it, valid or not: what a secret depends on."""
    raw = source.get(NAMESPACE, section)
    return raw.get(key) if isinstance(raw, Mapping) else None


def usage_settings(raw: Any, problems: list[str] | None = None) -> UsageSettings:
    """`liftoff:usage` validated; problems are appended to `problems`, or raised as ConfigError."""
    found: list[str] = []
    usage = _validate(UsageSettings, raw, f"{NAMESPACE}:usage", Place(), found)
    if problems is not None:
        problems.extend(found)
    elif found:
        raise ConfigError(found)
    return usage or UsageSettings()
