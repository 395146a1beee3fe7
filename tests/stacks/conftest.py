"""Renderings of the committed stacks, shared by the stack tests (each render takes about a second)."""

from __future__ import annotations

from typing import Any

import pytest

from stacks.release_plan import ReleasePlan
from tools.render import RecordingMocks, Rendering, render, stack_config

SECRETS = {
    "liftoff:openaiApiKey": "sk-test-openai-key-value",
    "liftoff:sentryDsn": "https://public-key@o0.ingest.sentry.io/0",
    "liftoff:supabaseJwtSecret": "test-supabase-jwt-secret-value",
    "supabase:accessToken": "sbp_test-supabase-access-token-value",
}


def render_stack(
    stack: str,
    overrides: dict[str, Any] | None = None,
    secrets: dict[str, str] | None = None,
    release: ReleasePlan | None = None,
) -> Rendering:
    config = {**stack_config(stack), **(overrides or {})}
    return render(stack, config, SECRETS if secrets is None else secrets, release=release)


@pytest.fixture(scope="session")
def prod() -> Rendering:
    return render_stack("prod")


@pytest.fixture(scope="session")
def staging() -> Rendering:
    return render_stack("staging")


@pytest.fixture
def registrations(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The type of every resource registered during the test (none, for a rejected config)."""
    registered: list[str] = []
    original = RecordingMocks.new_resource

    def spy(self: RecordingMocks, args: Any) -> Any:
        registered.append(args.typ)
        return original(self, args)

    monkeypatch.setattr(RecordingMocks, "new_resource", spy)
    return registered
