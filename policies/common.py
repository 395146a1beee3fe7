"""Helpers the policies share: where a Cloud Run resource keeps its containers, and config access."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

SERVICE = "gcp:cloudrunv2/service:Service"
WORKER_POOL = "gcp:cloudrunv2/workerPool:WorkerPool"
JOB = "gcp:cloudrunv2/job:Job"
CLOUD_RUN = (SERVICE, WORKER_POOL, JOB)


def mapping(value: Any) -> Mapping[str, Any]:
    """The value if it is a mapping, else an empty one: properties may be missing or unknown."""
    return value if isinstance(value, Mapping) else {}


def number(value: Any) -> float | None:
    """A numeric property: the engine sends every number as a double (1 arrives as 1.0)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def items(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else []


def members(props: Mapping[str, Any]) -> list[str]:
    """The principals an IAM member (`member`) or binding (`members`) resource grants to."""
    found = [m for m in items(props.get("members")) if isinstance(m, str)]
    member = props.get("member")
    return [*found, member] if isinstance(member, str) else found


def containers(resource_type: str, props: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    """The containers of a Cloud Run service, worker pool or job; nothing for other types."""
    template = mapping(props.get("template"))
    if resource_type == JOB:
        template = mapping(template.get("template"))
    elif resource_type not in (SERVICE, WORKER_POOL):
        return
    for container in items(template.get("containers")):
        if isinstance(container, Mapping):
            yield container


def environment(config: Mapping[str, Any], props: Mapping[str, Any]) -> str | None:
    """The environment a resource belongs to: the pack's config, else the resource's `env` label."""
    configured = config.get("environment")
    if isinstance(configured, str):
        return configured
    label = mapping(props.get("labels")).get("env")
    return label if isinstance(label, str) else None
