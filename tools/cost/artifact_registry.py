"""Artifact Registry: the storage of an image and of the releases the cleanup policy keeps."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tools.cost.model import Context, Line


def registries(resources: list[Mapping[str, Any]], ctx: Context) -> list[Line]:
    """One image plus what each kept release adds, as many releases as the cleanup policy keeps."""
    u = ctx.usage
    lines = []
    for r in resources:
        inputs = r["inputs"]
        kept = [
            int(p["mostRecentVersions"]["keepCount"])
            for p in inputs.get("cleanupPolicies", [])
            if p.get("action") == "KEEP" and (p.get("mostRecentVersions") or {}).get("keepCount")
        ]
        releases = max(kept) if kept else u.releases_per_month
        gb = (u.image_mb + releases * u.image_mb_per_release) / 1000
        lines.append(
            Line(
                f"registry/{inputs['repositoryId']}",
                "Artifact Registry",
                f"Repository {inputs['repositoryId']}: image storage",
                f"{gb:,.2f} GB: a {u.image_mb} MB image"
                f" + {releases} kept releases × {u.image_mb_per_release} MB",
                (ctx.charge("registry.storage", gb, inputs.get("location", "*")),),
            )
        )
    return lines
