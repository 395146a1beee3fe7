"""`liftoff:api`, `liftoff:worker` and `liftoff:app`: the Cloud Run workloads and their app settings."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field, ValidationInfo, field_validator, model_validator
from pydantic.alias_generators import to_camel

from components.rules import (
    INGRESS,
    Between,
    Concurrency,
    Cpu,
    MaxInstances,
    Memory,
    MinInstances,
    PoolInstances,
    RequestTimeoutSeconds,
    instances_in_order,
    one_of,
    public_takes_no_invokers,
)
from components.traffic import TrafficTarget
from stacks.settings.base import (
    Section,
    app_bounds,
    app_choices,
    app_default,
    derived,
    iam_members,
    pinned_traffic,
    place_of,
    refuse,
    refuse_each,
    with_defaults,
)
from stacks.settings.names import WorkloadNames


class ApiSettings(Section):
    """`liftoff:api`: the API's Cloud Run service."""

    public: bool = Field(
        False, description="Anyone may call the API (`allUsers`); otherwise only `invokers`."
    )
    invokers: Annotated[tuple[str, ...], BeforeValidator(iam_members)] = Field(
        (), description="IAM members that may call a private API, such as `group:team@example.com`."
    )
    min_instances: MinInstances = derived("Instances kept warm.", "`1` in prod, `0` in staging")
    max_instances: MaxInstances = Field(10, description="Most instances the service scales out to.")
    concurrency: Concurrency = Field(80, description="Requests one instance serves at once.")
    cpu: Cpu = Field("1", description="CPU limit of one instance.")
    memory: Memory = Field("512Mi", description="Memory limit of one instance.")
    timeout_seconds: RequestTimeoutSeconds = Field(300, description="Longest a request may take.")
    ingress: Annotated[str, AfterValidator(one_of(INGRESS)), AfterValidator(INGRESS.__getitem__)] = Field(
        "all", validate_default=True, description="Where requests may come from."
    )
    deletion_protection: bool = derived(
        "Cloud Run refuses to delete the service; must be true in prod.", "`true` in prod, `false` in staging"
    )
    # None: not declared in the stack file, so releases manage it (release/).
    traffic: tuple[TrafficTarget, ...] | None = Field(
        None,
        description="A split pinned by hand, as a list of `{revision, percent, tag}`; unset, releases"
        " (`make release`) move the traffic.",
    )

    @model_validator(mode="before")
    @classmethod
    def _environment_defaults(cls, data: Any, info: ValidationInfo) -> Any:
        prod = place_of(info).prod
        return with_defaults(data, minInstances=1 if prod else 0, deletionProtection=prod)

    @field_validator("traffic", mode="plain")
    @classmethod
    def _pinned(cls, raw: Any, info: ValidationInfo) -> tuple[TrafficTarget, ...] | None:
        service = WorkloadNames.of(place_of(info).environment).api
        return pinned_traffic(raw, "traffic", service, tags_allowed=True)

    @field_validator("invokers")
    @classmethod
    def _private_only(cls, invokers: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        refuse(public_takes_no_invokers(info.data.get("public", False), invokers))
        return invokers

    @field_validator("max_instances")
    @classmethod
    def _min_not_above(cls, maximum: int, info: ValidationInfo) -> int:
        minimum = info.data.get("min_instances")
        if minimum is not None:
            refuse_each({"minInstances": instances_in_order(minimum, maximum, "maxInstances")})
        return maximum

    @field_validator("deletion_protection")
    @classmethod
    def _protected_in_prod(cls, protected: bool, info: ValidationInfo) -> bool:
        refuse("must be true in prod" if place_of(info).prod and not protected else None)
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
    concurrency: Annotated[int, AfterValidator(app_bounds("worker_concurrency"))] = Field(
        app_default("worker_concurrency"),
        description="Jobs one instance runs at once (`WORKER_CONCURRENCY`).",
    )
    cpu: Cpu = Field("1", description="CPU limit of one instance.")
    memory: Memory = Field("512Mi", description="Memory limit of one instance.")
    # None: not declared in the stack file, so releases manage it (release/).
    split: tuple[TrafficTarget, ...] | None = Field(
        None,
        description="An instance split pinned by hand, as a list of `{revision, percent}`; unset,"
        " releases (`make release`) move it.",
    )

    @field_validator("split", mode="plain")
    @classmethod
    def _pinned(cls, raw: Any, info: ValidationInfo) -> tuple[TrafficTarget, ...] | None:
        service = WorkloadNames.of(place_of(info).environment).worker
        return pinned_traffic(raw, "split", service, tags_allowed=False)

    @model_validator(mode="after")
    def _one_way_to_scale(self) -> WorkerSettings:
        on_demand = {"min_instances", "max_instances", "idle_seconds"} & self.model_fields_set
        if self.instances is not None and on_demand:
            keys = ", ".join(sorted(to_camel(k) for k in on_demand))
            refuse_each(
                {"instances": f"a fixed count cannot be declared with {keys}: remove one or the other"}
            )
        if self.min_instances > self.max_instances:
            refuse_each(
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

    ai_provider: Annotated[str, BeforeValidator(one_of(app_choices("ai_provider")))] = Field(
        "openai", description="Generation provider (`AI_PROVIDER`); `openai` needs `liftoff:openaiApiKey`."
    )
    default_model: str = Field("gpt-4o-mini", description="Model used when a request names none.")
    log_level: Annotated[str, BeforeValidator(one_of(app_choices("log_level")))] = Field(
        "INFO", description="Minimum log severity."
    )
    # Per-tenant limits that protect AI spend (the app's TENANT_* settings; migrate applies them).
    tenant_max_active_jobs: Annotated[int, AfterValidator(TENANT_LIMIT)] = Field(
        app_default("tenant_max_active_jobs"),
        description="Jobs an organization may have queued or running at once.",
    )
    tenant_max_submissions_per_minute: Annotated[int, AfterValidator(TENANT_LIMIT)] = Field(
        app_default("tenant_max_submissions_per_minute"),
        description="Jobs an organization may submit in any 60 seconds.",
    )
