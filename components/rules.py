"""The rules component inputs follow, each defined once.

Each rule is a pydantic `Annotated` type: the stack settings (stacks/settings/) declare their
fields with it, and the components' frozen argument dataclasses check theirs with `check`, so a
value the settings accept is one the components accept, and the reverse.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Annotated, Any

from pydantic import AfterValidator, TypeAdapter, ValidationError
from pydantic_core import ErrorDetails, PydanticCustomError

# Cloud Run CPU limits as whole CPUs from 1 to 8 or as millicores; memory limits in Mi or Gi.
CPU = re.compile(r"^(?:[1-8]|[1-9][0-9]{2,3}m)$")
MEMORY = re.compile(r"^[1-9][0-9]*(?:Mi|Gi)$")
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
# https://docs.docker.com/reference/cli/docker/image/tag/: up to 128 word characters, dots and
# dashes, not starting with a dot or a dash.
IMAGE_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
# Cloud Run's ingress settings, by the short names a stack file uses.
INGRESS = {
    "all": "INGRESS_TRAFFIC_ALL",
    "internal": "INGRESS_TRAFFIC_INTERNAL_ONLY",
    "internal-and-load-balancer": "INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER",
}
# V1CreateProjectBody.region_selection (type "specific").code's enum in the Management API.
SUPABASE_REGIONS = frozenset(
    {
        "us-east-1",
        "us-east-2",
        "us-west-1",
        "us-west-2",
        "ap-east-1",
        "ap-southeast-1",
        "ap-northeast-1",
        "ap-northeast-2",
        "ap-southeast-2",
        "eu-west-1",
        "eu-west-2",
        "eu-west-3",
        "eu-north-1",
        "eu-central-1",
        "eu-central-2",
        "ca-central-1",
        "ap-south-1",
        "sa-east-1",
    }
)
# Upstash's primary regions for global databases.
UPSTASH_REGIONS = frozenset(
    {
        "us-east-1",
        "us-east-2",
        "us-west-1",
        "us-west-2",
        "ca-central-1",
        "eu-central-1",
        "eu-west-1",
        "eu-west-2",
        "sa-east-1",
        "ap-south-1",
        "ap-northeast-1",
        "ap-southeast-1",
        "ap-southeast-2",
        "af-south-1",
    }
)


@dataclass(frozen=True)
class Between:
    """A number from `low` to `high`, both included."""

    low: int
    high: int

    def __call__(self, value: Any) -> Any:
        if not self.low <= value <= self.high:
            raise ValueError(f"must be from {self.low} to {self.high}, got {value}")
        return value

    @property
    def doc(self) -> str:
        return f"{self.low:,} to {self.high:,}"


@dataclass(frozen=True)
class OpenUnit:
    """A ratio strictly between 0 and 1."""

    def __call__(self, value: Any) -> Any:
        if not 0 < value < 1:
            raise ValueError(f"must be between 0 and 1, got {value}")
        return value

    @property
    def doc(self) -> str:
        return "between 0 and 1, both excluded"


@dataclass(frozen=True)
class Matches:
    """A string that matches `pattern`; `what` says what such a string is."""

    pattern: re.Pattern[str]
    what: str

    def __call__(self, value: Any) -> Any:
        if not isinstance(value, str) or not self.pattern.match(value):
            raise ValueError(f"{value!r} is not {self.what}")
        return value

    @property
    def doc(self) -> str:
        return self.what


@dataclass(frozen=True)
class OneOf:
    """One of a fixed set of strings; `what` names the set in a component's message."""

    options: frozenset[str]
    what: str | None = None

    def __call__(self, value: Any) -> Any:
        if not isinstance(value, str) or value not in self.options:
            raise PydanticCustomError(
                "one_of",
                "{value} is not one of: {options}",
                {"value": repr(value), "options": ", ".join(sorted(self.options)), "what": self.what},
            )
        return value

    @property
    def doc(self) -> str:
        return "one of: " + ", ".join(f"`{option}`" for option in sorted(self.options))


@dataclass(frozen=True)
class CronFields:
    """A cron expression with the five standard fields, as Cloud Scheduler takes it."""

    def __call__(self, value: str) -> str:
        if len(value.split()) != 5:
            raise ValueError("must be a 5-field cron expression")
        return value

    @property
    def doc(self) -> str:
        return "a 5-field cron expression"


def one_of(options: Iterable[str], what: str | None = None) -> OneOf:
    return OneOf(frozenset(options), what)


Cpu = Annotated[str, AfterValidator(Matches(CPU, "a CPU value (1-8, or millicores like 500m)"))]
Memory = Annotated[str, AfterValidator(Matches(MEMORY, "a memory size like 512Mi or 2Gi"))]
Email = Annotated[str, AfterValidator(Matches(EMAIL, "an email address"))]
ImageTag = Annotated[str, AfterValidator(Matches(IMAGE_TAG, "a Docker tag"))]
Cron = Annotated[str, AfterValidator(CronFields())]
Ratio = Annotated[float, AfterValidator(OpenUnit())]
# Cloud Run's scaling and timeouts. Requests per instance go up to 1000
# (https://cloud.google.com/run/docs/about-concurrency); a request up to an hour, a job task a day.
MinInstances = Annotated[int, AfterValidator(Between(0, 1000))]
MaxInstances = Annotated[int, AfterValidator(Between(1, 1000))]
Concurrency = Annotated[int, AfterValidator(Between(1, 1000))]
RequestTimeoutSeconds = Annotated[int, AfterValidator(Between(1, 3600))]
PoolInstances = Annotated[int, AfterValidator(Between(0, 100))]
JobTimeoutSeconds = Annotated[int, AfterValidator(Between(1, 86_400))]
# Alert thresholds: a p95 latency up to 10 minutes, a queue age up to a day.
LatencyMs = Annotated[int, AfterValidator(Between(1, 600_000))]
QueueAgeSeconds = Annotated[int, AfterValidator(Between(1, 86_400))]
# Upstash's monthly budget in USD: a spend cap, so a runaway loop cannot run up a bill.
UpstashBudget = Annotated[int, AfterValidator(Between(1, 10_000))]
SupabaseRegion = Annotated[str, AfterValidator(one_of(SUPABASE_REGIONS, "a Supabase region"))]
UpstashRegion = Annotated[str, AfterValidator(one_of(UPSTASH_REGIONS, "an Upstash region"))]
CloudRunIngress = Annotated[str, AfterValidator(one_of(INGRESS.values(), "a Cloud Run ingress"))]


def instances_in_order(minimum: int, maximum: int, maximum_key: str = "max_instances") -> str | None:
    """What is wrong with a minimum instance count above the maximum, or None."""
    return f"{minimum} is above {maximum_key} {maximum}" if minimum > maximum else None


def public_takes_no_invokers(public: bool, invokers: Iterable[str]) -> str | None:
    """Everyone may call a public API: an invoker list beside it would mean nothing."""
    return "a public API takes no invoker list" if public and tuple(invokers) else None


# Wrong types, in the words of the stack file: YAML's object is Python's dict, and so on.
TYPE_NAMES = {
    "int_type": "int",
    "string_type": "str",
    "bool_type": "bool",
    "float_type": "a number",
    "tuple_type": "a list",
    "list_type": "a list",
}


def explain(error: ErrorDetails | Mapping[str, Any]) -> str:
    """One pydantic error in the project's words: `must be int, got 'eight'`, `is required`."""
    kind, value = error.get("type"), error.get("input")
    if kind == "missing":
        return "is required"
    if kind == "extra_forbidden":
        return "unknown key"
    if kind in ("model_type", "dict_type"):
        return f"must be an object, got {type(value).__name__}"
    if kind in TYPE_NAMES:
        return f"must be {TYPE_NAMES[str(kind)]}, got {value!r}"
    message = str(error.get("msg", "invalid"))
    if kind == "value_error":
        return message.removeprefix("Value error, ")
    if kind == "one_of":
        return message
    return f"{message}, got {value!r}"


@cache
def _adapter(rule: Any) -> TypeAdapter[Any]:
    return TypeAdapter(rule)


def check(args: object, **rules: Any) -> None:
    """Check fields of a component's arguments against their rules; ValueError names the field.

    `check(self, cpu=Cpu)` in a dataclass's `__post_init__`. Strict: a component is given
    Python values of the right type, never strings to coerce.
    """
    for field, rule in rules.items():
        try:
            _adapter(rule).validate_python(getattr(args, field), strict=True)
        except ValidationError as error:
            raise ValueError(f"{field}: {_component_message(error.errors()[0])}") from None


def _component_message(error: ErrorDetails) -> str:
    context = error.get("ctx") or {}
    if error["type"] == "one_of" and context.get("what"):
        return f"{context['value']} is not {context['what']}: {context['options']}"
    return explain(error)


def refuse(field: str, problem: str | None) -> None:
    """Raise a component's ValueError for `problem` (from a rule above), naming `field`."""
    if problem is not None:
        raise ValueError(f"{field}: {problem}")
