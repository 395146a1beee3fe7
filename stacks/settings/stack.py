"""The whole stack's settings: its top-level keys and sections, read and validated at once."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, get_args

import pulumi
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from components.rules import ImageTag, Matches
from stacks.settings import release as release_config
from stacks.settings.base import (
    CLOUD_RUN_REGIONS,
    NAMESPACE,
    PROJECT_ID,
    ConfigError,
    ConfigSource,
    Environment,
    Place,
    PulumiConfig,
    Section,
    validate_section,
)
from stacks.settings.judgeable import release_traffic_problems, split_instance_problems
from stacks.settings.names import WorkloadNames
from stacks.settings.operations import AlertSettings, RetentionSettings
from stacks.settings.release import ReleaseSettings
from stacks.settings.secrets import Secrets, secret_problems
from stacks.settings.services import RedisSettings, SupabaseSettings
from stacks.settings.usage import UsageSettings, usage_settings
from stacks.settings.workloads import ApiSettings, AppSettings, WorkerSettings


def _cloud_run_region(value: Any) -> Any:
    if not isinstance(value, str) or value not in CLOUD_RUN_REGIONS:
        raise ValueError(f"{value!r} is not a Cloud Run region: {', '.join(sorted(CLOUD_RUN_REGIONS))}")
    return value


def _environment(value: Any) -> Any:
    if value not in get_args(Environment):
        raise ValueError(f"{value!r} must be {' or '.join(get_args(Environment))}")
    return value


class StackKeys(BaseModel):
    """The stack's top-level keys: where it runs, in which environment, with which image."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    project: Annotated[
        str,
        BeforeValidator(Matches(PROJECT_ID, "a GCP project id (set it: pulumi config set gcp:project ID)")),
    ] = Field(alias="gcp:project", description="The GCP project the stack deploys to.")
    region: Annotated[str, BeforeValidator(_cloud_run_region)] = Field(
        alias="gcp:region",
        description="The Cloud Run region; Supabase and Upstash default to the nearest AWS region.",
        json_schema_extra={"constraint": "a Cloud Run region (" + ", ".join(sorted(CLOUD_RUN_REGIONS)) + ")"},
    )
    environment: Annotated[Environment, BeforeValidator(_environment)] = Field(
        alias=f"{NAMESPACE}:environment",
        description="`staging` or `prod`; prod gets the stricter defaults noted below.",
        json_schema_extra={"default": "the stack's name"},
    )
    # Unset, the tag is derived from the image's sources (stacks/program.py): a tag that changes
    # with every commit would rebuild the image and show a diff in every preview.
    image_tag: ImageTag | None = Field(
        None,
        alias=f"{NAMESPACE}:imageTag",
        description="The image's tag; unset, it is derived from the image's sources.",
    )


@dataclass(frozen=True)
class StackSettings:
    """Everything the program needs, validated."""

    project: str
    region: str
    environment: Environment
    image_tag: str | None
    supabase: SupabaseSettings
    redis: RedisSettings
    api: ApiSettings
    worker: WorkerSettings
    app: AppSettings
    retention: RetentionSettings
    alerts: AlertSettings
    secrets: Secrets
    usage: UsageSettings = field(default_factory=UsageSettings)
    release: ReleaseSettings = field(default_factory=ReleaseSettings)

    @property
    def names(self) -> WorkloadNames:
        return WorkloadNames.of(self.environment)

    @property
    def prefix(self) -> str:
        return self.names.prefix

    @property
    def api_service_name(self) -> str:
        return self.names.api

    @property
    def worker_pool_name(self) -> str:
        return self.names.worker

    @property
    def labels(self) -> dict[str, str]:
        return {"app": "liftoff", "env": self.environment}


# `liftoff:<key>` -> the section the program reads from it (usage and release are read on their own).
SECTIONS: dict[str, type[Section]] = {
    "supabase": SupabaseSettings,
    "redis": RedisSettings,
    "api": ApiSettings,
    "worker": WorkerSettings,
    "app": AppSettings,
    "retention": RetentionSettings,
    "alerts": AlertSettings,
}


def load(source: ConfigSource | None = None, *, stack: str | None = None) -> StackSettings:
    """Read and validate the whole configuration; ConfigError lists every problem."""
    source = source or PulumiConfig()
    problems: list[str] = []
    raw_keys = _top_level(source, stack or pulumi.get_stack())
    keys = validate_section(StackKeys, raw_keys, "", Place(), problems)
    place = Place(str(raw_keys[f"{NAMESPACE}:environment"]), raw_keys["gcp:region"])
    sections: dict[str, Any] = {
        name: validate_section(model, source.get(NAMESPACE, name), f"{NAMESPACE}:{name}", place, problems)
        for name, model in SECTIONS.items()
    }
    secrets = Secrets.read(source)
    problems.extend(secret_problems(source, secrets))
    usage = usage_settings(source.get(NAMESPACE, "usage"), problems)
    release, release_problems = release_config.parse(source.get(NAMESPACE, "release"), cloud=True)
    problems.extend(release_problems or release_traffic_problems(release, usage))
    if sections["worker"] is not None and not release_problems:
        problems.extend(split_instance_problems(sections["worker"], release))
    if problems or keys is None:
        raise ConfigError(problems)
    return StackSettings(
        project=keys.project,
        region=keys.region,
        environment=keys.environment,
        image_tag=keys.image_tag,
        secrets=secrets,
        usage=usage,
        release=release,
        **sections,
    )


def _top_level(source: ConfigSource, stack: str) -> dict[str, Any]:
    return {
        "gcp:project": source.get("gcp", "project"),
        "gcp:region": source.get("gcp", "region"),
        f"{NAMESPACE}:environment": source.get(NAMESPACE, "environment") or stack,
        f"{NAMESPACE}:imageTag": source.get(NAMESPACE, "imageTag"),
    }
