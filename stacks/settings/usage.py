"""`liftoff:usage`: how much a stack is used in a month, as the cost estimate prices it."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, Field

from components.rules import Between, one_of
from stacks.settings.base import NAMESPACE, ConfigError, Place, Section, validate_section

# --- Usage assumptions (`liftoff:usage`): what the cost estimate (tools/cost/) prices. ---
# They register nothing; they live here so that a typo fails `pulumi up` and `make cost` alike.

SUPABASE_PLANS = frozenset({"free", "pro"})

# The month every `…PerMonth` figure is counted in, and the cost estimate's month: a year's 8,760
# hours over twelve, the month providers quote monthly figures for always-on resources in.
HOURS_PER_MONTH = 730


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


def usage_settings(raw: Any, problems: list[str] | None = None) -> UsageSettings:
    """`liftoff:usage` validated; problems are appended to `problems`, or raised as ConfigError."""
    found: list[str] = []
    usage = validate_section(UsageSettings, raw, f"{NAMESPACE}:usage", Place(), found)
    if problems is not None:
        problems.extend(found)
    elif found:
        raise ConfigError(found)
    return usage or UsageSettings()
