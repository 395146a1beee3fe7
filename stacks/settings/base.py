"""What every settings section shares: the errors, the config source, the place a stack runs in,
and the validation helpers that name each problem by its key."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeVar, get_args

import pulumi
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo
from pydantic.alias_generators import to_camel
from pydantic_core import ErrorDetails, PydanticCustomError

from app.settings import Settings as AppContract
from components.rules import Between, explain
from components.traffic import TrafficError, TrafficTarget, parse_targets

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


def place_of(info: ValidationInfo) -> Place:
    return info.context if isinstance(info.context, Place) else Place()


def with_defaults(data: Any, **defaults: Any) -> Any:
    """An object's keys over defaults that depend on the place; anything else as it is."""
    return {**defaults, **data} if isinstance(data, Mapping) else data


def derived(description: str, default: str) -> Any:
    """A key whose default depends on the place (filled in before validation), as `default` says."""
    return Field(description=description, json_schema_extra={"default": default})


def keyed(found: list[str]) -> PydanticCustomError:
    """Problems that start with their key inside the section (`traffic[0].tag: ...`), all at once."""
    return PydanticCustomError("keyed", "{message}", {"message": "; ".join(found), "problems": found})


def refuse(problem: str | None) -> None:
    """Fail the field being validated with `problem`, if there is one."""
    if problem is not None:
        raise ValueError(problem)


def refuse_each(problems: Mapping[str, str | None]) -> None:
    """Raise every cross-key problem of a section at once, each named by its key in the section."""
    found = [f"{key}: {problem}" for key, problem in problems.items() if problem is not None]
    if found:
        raise keyed(found)


def app_default(name: str) -> int:
    """The app's own default for one of its settings: the stack's default is the app's."""
    value = AppContract.model_fields[name].default
    if not isinstance(value, int):
        raise TypeError(f"app setting {name} has no whole-number default")
    return value


def app_bounds(name: str) -> Between:
    """The app's own bounds for one of its settings: the stack accepts what the app accepts."""
    metadata = AppContract.model_fields[name].metadata
    low = next(int(m.ge) for m in metadata if hasattr(m, "ge"))
    high = next(int(m.le) for m in metadata if hasattr(m, "le"))
    return Between(low, high)


def app_choices(name: str) -> frozenset[str]:
    """The values the app accepts for one of its settings (a Literal): the stack accepts the same."""
    return frozenset(get_args(AppContract.model_fields[name].annotation))


def iam_members(value: Any) -> Any:
    if not isinstance(value, list | tuple) or not all(isinstance(m, str) for m in value):
        raise ValueError("must be a list of IAM members")
    return tuple(value)


def pinned_traffic(
    raw: Any, key: str, service: str, *, tags_allowed: bool
) -> tuple[TrafficTarget, ...] | None:
    """A split the stack file pins by hand, or None when it leaves it to releases."""
    if raw is None:
        return None
    try:
        return parse_targets(raw, key=key, service=service, tags_allowed=tags_allowed)
    except TrafficError as error:
        raise keyed([str(error)]) from None


class Section(BaseModel):
    """One `liftoff:<section>` object: camelCase keys, nothing unknown, no type coerced."""

    # Python builds a section by field name (UsageSettings(requests_per_month=...)); a stack file's
    # keys are validated by their camelCase alias only (see validate_section).
    model_config = ConfigDict(
        extra="forbid", frozen=True, strict=True, alias_generator=to_camel, populate_by_name=True
    )


def validate_section(model: type[M], raw: Any, key: str, place: Place, problems: list[str]) -> M | None:
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
