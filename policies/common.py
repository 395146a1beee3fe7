"""Helpers the policies share: reading properties as the analyzer delivers them, and where Cloud Run
keeps its containers.

Under `pulumi preview --policy-pack`, validators never see plain dicts and lists. The policy runtime
(pulumi_policy/policy.py, `Analyze`) deserializes the engine's protobuf Struct and wraps it in
`pulumi_policy.proxy.unknown_checking_proxy`: objects arrive as a `Mapping` proxy, lists as a
`Sequence` proxy, every number as a float (1 arrives as 1.0), secrets as their plain value, and
reading a value the engine cannot know yet raises `UnknownValueError`. The helpers here accept any
`Mapping`/`Sequence` and turn an unknown into UNKNOWN, so each rule decides what it means.

Unknowns exist only at preview (a digest the build has not produced, a service account's email
before the account exists). `pulumi up` runs every rule again, on the same resource, with its
inputs known and before the resource is created or changed. So a rule that needs an unknown value
to decide leaves the decision to that run instead of guessing, unless it can decide without it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from enum import Enum
from typing import Any, Final

from pulumi_policy.proxy import (
    UNKNOWN_ARCHIVE_VALUE,
    UNKNOWN_ARRAY_VALUE,
    UNKNOWN_ASSET_VALUE,
    UNKNOWN_BOOLEAN_VALUE,
    UNKNOWN_NUMBER_VALUE,
    UNKNOWN_OBJECT_VALUE,
    UNKNOWN_STRING_VALUE,
    UnknownValueError,
)

SERVICE = "gcp:cloudrunv2/service:Service"
WORKER_POOL = "gcp:cloudrunv2/workerPool:WorkerPool"
JOB = "gcp:cloudrunv2/job:Job"
CLOUD_RUN = (SERVICE, WORKER_POOL, JOB)

# The engine's markers for values it cannot know yet (pulumi/pulumi sdk/go/common/resource/plugin/rpc.go).
SENTINELS = frozenset(
    {
        UNKNOWN_BOOLEAN_VALUE,
        UNKNOWN_NUMBER_VALUE,
        UNKNOWN_STRING_VALUE,
        UNKNOWN_ARRAY_VALUE,
        UNKNOWN_ASSET_VALUE,
        UNKNOWN_ARCHIVE_VALUE,
        UNKNOWN_OBJECT_VALUE,
    }
)


class Unknown(Enum):
    """A value the engine cannot know until the update (see the module's docstring)."""

    UNKNOWN = "unknown until the update"


UNKNOWN: Final = Unknown.UNKNOWN


def _known(value: Any) -> Any:
    return UNKNOWN if isinstance(value, str) and value in SENTINELS else value


def get(value: Any, key: str) -> Any:
    """`value[key]`: None when absent or when `value` is not a mapping, UNKNOWN when not yet known."""
    if value is UNKNOWN or _known(value) is UNKNOWN:
        return UNKNOWN
    if not isinstance(value, Mapping):
        return None
    try:
        return _known(value.get(key))
    except UnknownValueError:
        return UNKNOWN


def read(value: Any, *keys: str) -> Any:
    """The value at a path of keys, as `get` reads each step."""
    for key in keys:
        value = get(value, key)
    return value


def items(value: Any) -> list[Any]:
    """The elements of a list property (UNKNOWN for those not yet known); nothing if it is not a list.

    A list that is itself unknown gives nothing: what it will hold is checked at the update.
    """
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        return []
    found = []
    for index in range(len(value)):
        try:
            found.append(_known(value[index]))
        except UnknownValueError:
            found.append(UNKNOWN)
    return found


def number(value: Any) -> float | None:
    """A numeric property: the engine sends every number as a double (1 arrives as 1.0)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def members(props: Any) -> list[str]:
    """The principals an IAM member (`member`) or binding (`members`) resource grants to.

    Members not known yet are left out: at preview they are another resource's output (a service
    account's email), never a literal such as allUsers; the update checks them known.
    """
    found = [m for m in items(get(props, "members")) if isinstance(m, str)]
    member = get(props, "member")
    return [*found, member] if isinstance(member, str) else found


def containers(resource_type: str, props: Any) -> Iterator[Any]:
    """The containers of a Cloud Run service, worker pool or job (known ones); nothing for other types."""
    if resource_type == JOB:
        listed = read(props, "template", "template", "containers")
    elif resource_type in (SERVICE, WORKER_POOL):
        listed = read(props, "template", "containers")
    else:
        return
    for container in items(listed):
        if isinstance(container, Mapping):
            yield container


def environment(config: Mapping[str, Any], props: Any) -> str | None:
    """The environment a resource belongs to: the pack's config, else the resource's `env` label."""
    configured = config.get("environment")
    if isinstance(configured, str):
        return configured
    label = read(props, "labels", "env")
    return label if isinstance(label, str) else None
