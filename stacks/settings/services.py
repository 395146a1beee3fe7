"""`liftoff:supabase` and `liftoff:redis`: the managed Postgres and Redis a stack uses."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, get_args

from pydantic import BeforeValidator, Field, ValidationInfo, field_validator, model_validator

from components.rules import SupabaseRegion, UpstashBudget, UpstashRegion, one_of
from stacks.settings.base import Section, SupabaseMode, derived, place_of, with_defaults


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
    region: SupabaseRegion = derived("The region of a created project.", "nearest to `gcp:region`")
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
        return with_defaults(data, region=place_of(info).nearest)

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

    primary_region: UpstashRegion = derived(
        "Where the global database's primary runs.", "nearest to `gcp:region`"
    )
    budget: UpstashBudget = Field(20, description="Monthly spend in USD at which Upstash stops serving.")

    @model_validator(mode="before")
    @classmethod
    def _nearest_region(cls, data: Any, info: ValidationInfo) -> Any:
        return with_defaults(data, primaryRegion=place_of(info).nearest)
