"""Request and response bodies of the public API."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, JsonValue, StringConstraints
from typing_extensions import TypeAliasType

from app.status import JobStatus

MAX_PROMPT_BYTES = 32 * 1024
MAX_BODY_BYTES = 64 * 1024
MAX_PAGE = 100

# Postgres text and jsonb cannot hold NUL, so the contract excludes it everywhere.
Text = Annotated[str, StringConstraints(pattern=r"^[^\x00]*$")]
# Nor NaN or infinities (1e400 reads as infinity): JSON has no such numbers, and jsonb refuses them.
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
ParamValue = TypeAliasType(
    "ParamValue",
    "Text | int | FiniteFloat | bool | None | list[ParamValue] | dict[Text, ParamValue]",
)
ModelName = Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/-]*$")]


class GenerationCreate(BaseModel):
    """A request to run one generation."""

    model_config = ConfigDict(extra="forbid")

    prompt: Text = Field(min_length=1, description=f"At most {MAX_PROMPT_BYTES} bytes of UTF-8.")
    model: ModelName | None = Field(None, description="Provider model; the deployment's default if omitted.")
    params: dict[Text, ParamValue] = Field(default_factory=dict, description="Provider parameters.")


class Generation(BaseModel):
    """A generation job and, once it has run, its result."""

    id: UUID
    status: JobStatus
    prompt: str
    model: str
    params: dict[str, JsonValue]
    result: JsonValue | None
    error: str | None
    attempts: int
    cancel_requested: bool
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class GenerationPage(BaseModel):
    """One page of a tenant's generations, newest first."""

    items: list[Generation]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last.")


class Health(BaseModel):
    """Liveness."""

    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    """Every dependency answered in time."""

    status: Literal["ready"] = "ready"
    checks: dict[str, Literal["ok"]]
