"""Job functions. Each is `async def job(ctx, *, ...)`; cancellation arrives as CancelledError."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from uuid import UUID

from app.worker.providers import Provider


@dataclass(frozen=True, slots=True)
class JobContext:
    """What a job may use: its identity and the provider."""

    job_id: UUID
    attempt: int
    provider: Provider


async def generate(ctx: JobContext, *, prompt: str, model: str, params: dict[str, Any]) -> dict[str, Any]:
    """Run one generation through the configured provider."""
    return await ctx.provider.generate(
        job_id=ctx.job_id, attempt=ctx.attempt, prompt=prompt, model=model, params=params
    )
