"""Traffic splits and revision names: how a release ships, and how it is rolled back.

A release ships as a new revision, named from its image digest and its template, at 0 %
under a tag. Traffic moves in a later update, and a rollback is the same move backwards:
100 % to the stable revision, named explicitly. Nothing here touches Pulumi resources, so
the rules are checked before anything is registered.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

LATEST = "latest"
# Cloud Run revision names are DNS labels; the service name, a dash and a 16-char suffix fit.
MAX_REVISION_NAME = 63
REVISION_SUFFIX_LENGTH = 16
# Tags become a host label prefix (TAG---SERVICE-...run.app); keep them short and DNS-safe.
TAG_PATTERN = re.compile(r"^[a-z](?:[a-z0-9-]{0,44}[a-z0-9])?$")
REVISION_PATTERN = re.compile(r"^[a-z](?:[a-z0-9-]{0,61}[a-z0-9])?$")


class TrafficError(ValueError):
    """A traffic split that Cloud Run would refuse, or that would not mean what it says."""


@dataclass(frozen=True, slots=True)
class TrafficTarget:
    """A share of traffic (or of worker instances) for the latest revision or a named one."""

    percent: int
    revision: str = LATEST
    tag: str | None = None

    @property
    def is_latest(self) -> bool:
        return self.revision == LATEST


def parse_targets(
    raw: object, *, key: str, service: str, tags_allowed: bool = True
) -> tuple[TrafficTarget, ...]:
    """Targets from stack config, or TrafficError naming `key` and what is wrong."""
    if not isinstance(raw, list) or not raw:
        raise TrafficError(f"{key}: must be a non-empty list of {{revision, percent, tag}}")
    targets = []
    for index, item in enumerate(raw):
        where = f"{key}[{index}]"
        if not isinstance(item, Mapping):
            raise TrafficError(f"{where}: must be a mapping with revision and percent")
        unknown = set(item) - {"revision", "percent", "tag"}
        if unknown:
            raise TrafficError(f"{where}: unknown keys {sorted(unknown)}")
        percent = item.get("percent")
        if isinstance(percent, bool) or not isinstance(percent, int) or not 0 <= percent <= 100:
            raise TrafficError(f"{where}.percent: must be a whole number from 0 to 100, got {percent!r}")
        revision = item.get("revision", LATEST)
        if not isinstance(revision, str) or not revision:
            raise TrafficError(f"{where}.revision: must be 'latest' or a revision name")
        tag = item.get("tag")
        if tag is not None and not tags_allowed:
            raise TrafficError(f"{where}.tag: worker instance splits take no tags")
        if tag is not None and (not isinstance(tag, str) or not TAG_PATTERN.match(tag)):
            raise TrafficError(
                f"{where}.tag: {tag!r} is not DNS-safe (lowercase letters, digits and dashes, starting"
                " with a letter, at most 46 characters)"
            )
        targets.append(TrafficTarget(percent=percent, revision=revision, tag=tag))
    validate(targets, key=key, service=service)
    return tuple(targets)


def validate(targets: Sequence[TrafficTarget], *, key: str, service: str) -> None:
    """Percents sum to 100, at most one LATEST, tags unique, pinned revisions named in full."""
    total = sum(t.percent for t in targets)
    if total != 100:
        raise TrafficError(f"{key}: percents sum to {total}, not 100")
    if sum(t.is_latest for t in targets) > 1:
        raise TrafficError(f"{key}: more than one target is 'latest'")
    tags = [t.tag for t in targets if t.tag is not None]
    duplicates = sorted({tag for tag in tags if tags.count(tag) > 1})
    if duplicates:
        raise TrafficError(f"{key}: tags must be unique, repeated: {duplicates}")
    for index, target in enumerate(targets):
        if target.is_latest:
            continue
        if not REVISION_PATTERN.match(target.revision) or not target.revision.startswith(f"{service}-"):
            raise TrafficError(
                f"{key}[{index}].revision: {target.revision!r} is not a revision of {service}; pin a"
                f" revision by its full name ({service}-<suffix>, as exported by the last update)"
            )
    pinned = [t.revision for t in targets if not t.is_latest]
    repeated = sorted({r for r in pinned if pinned.count(r) > 1})
    if repeated:
        raise TrafficError(f"{key}: revision listed twice: {repeated}")


def revision_suffix(image_digest: str, template: Mapping[str, Any]) -> str:
    """A suffix derived from the image digest and the rest of the template.

    The same image and configuration give the same name (no new revision, nothing to do); any
    change gives a new one, so a name is never reused (Cloud Run answers 409 to a reused name).
    """
    if not image_digest.startswith("sha256:"):
        raise ValueError(f"not an image digest: {image_digest!r}")
    fingerprint = json.dumps(template, sort_keys=True, default=str, separators=(",", ":"))
    digest_part = image_digest.removeprefix("sha256:")[:8]
    config_part = hashlib.sha256(fingerprint.encode()).hexdigest()[: REVISION_SUFFIX_LENGTH - 9]
    return f"{digest_part}-{config_part}"


def revision_name(service: str, image_digest: str, template: Mapping[str, Any]) -> str:
    """`<service>-<digest prefix>-<template hash>`, at most 63 characters."""
    name = f"{service}-{revision_suffix(image_digest, template)}"
    if len(name) > MAX_REVISION_NAME:
        raise ValueError(f"service name {service!r} is too long for revision names")
    return name


def candidate_tags(targets: Iterable[TrafficTarget]) -> list[str]:
    """Tags on the latest revision: where a new release can be smoke-tested before it takes traffic."""
    return [t.tag for t in targets if t.is_latest and t.tag is not None]
