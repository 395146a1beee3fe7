"""The secret stack config, and the secrets the rest of the configuration requires."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import pulumi

from components.supabase_api import TOKEN_CONFIG_KEY as SUPABASE_TOKEN
from stacks.settings.base import NAMESPACE, ConfigSource


def _secret(key: str, description: str) -> Any:
    return field(metadata={"key": key, "description": description})


@dataclass(frozen=True)
class Secrets:
    """Secret stack config; values stay Pulumi secrets end to end."""

    openai_api_key: pulumi.Output[str] | None = _secret(
        "openaiApiKey", "The OpenAI API key; required when `app.aiProvider` is `openai`."
    )
    sentry_dsn: pulumi.Output[str] | None = _secret("sentryDsn", "Turns on Sentry error reporting.")
    supabase_jwt_secret: pulumi.Output[str] | None = _secret(
        "supabaseJwtSecret", "The Supabase project's JWT secret, for HS256 tokens."
    )
    supabase_db_password: pulumi.Output[str] | None = _secret(
        "supabaseDbPassword",
        "The adopted project's database password; required when `supabase.mode` is `adopt`.",
    )

    @classmethod
    def read(cls, source: ConfigSource) -> Secrets:
        return cls(**{f.name: source.get_secret(NAMESPACE, f.metadata["key"]) for f in fields(cls)})


def secret_problems(source: ConfigSource, secrets: Secrets) -> list[str]:
    """The secrets that the rest of the configuration needs, and that are not set."""
    problems = []
    if _raw_value(source, "app", "aiProvider") != "local" and secrets.openai_api_key is None:
        problems.append(
            f"{NAMESPACE}:openaiApiKey: is required when app.aiProvider is openai"
            f" (pulumi config set --secret {NAMESPACE}:openaiApiKey sk-...)"
        )
    if source.get_secret("supabase", "accessToken") is None:
        problems.append(
            f"{SUPABASE_TOKEN}: is required: the Supabase Management API token"
            f" (pulumi config set --secret {SUPABASE_TOKEN} sbp_...)"
        )
    if _raw_value(source, "supabase", "mode") == "adopt" and secrets.supabase_db_password is None:
        problems.append(
            f"{NAMESPACE}:supabaseDbPassword: is required when supabase.mode is adopt (set it --secret)"
        )
    return problems


def _raw_value(source: ConfigSource, section: str, key: str) -> Any:
    """A key of a section as the stack file has it, valid or not: what a secret depends on."""
    raw = source.get(NAMESPACE, section)
    return raw.get(key) if isinstance(raw, Mapping) else None
