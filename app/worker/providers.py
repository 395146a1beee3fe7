"""Generation providers: `local` (deterministic, offline) and `openai` (HTTP, any compatible API)."""

from __future__ import annotations

import asyncio
import hashlib
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Protocol
from uuid import UUID

import httpx

from app.settings import Settings

# Provider statuses worth another attempt: rate limits, timeouts and server-side failures.
RETRYABLE_STATUSES = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


class ProviderError(Exception):
    """A failed provider call; `retryable` says whether another attempt may succeed."""

    def __init__(self, message: str, *, retryable: bool, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after


class Provider(Protocol):
    """Turns a prompt into a JSON result."""

    name: str

    async def generate(
        self, *, job_id: UUID, attempt: int, prompt: str, model: str, params: dict[str, Any]
    ) -> dict[str, Any]: ...

    async def aclose(self) -> None: ...


class LocalProvider:
    """Deterministic output with configurable latency and failure rate, for development and tests.

    Whether an attempt fails depends only on (job, attempt), so runs are reproducible.
    """

    name = "local"

    def __init__(self, latency_ms: int = 0, failure_rate: float = 0.0) -> None:
        self.latency = latency_ms / 1000
        self.failure_rate = failure_rate

    async def generate(
        self, *, job_id: UUID, attempt: int, prompt: str, model: str, params: dict[str, Any]
    ) -> dict[str, Any]:
        if self.latency:
            await asyncio.sleep(self.latency)
        roll = int.from_bytes(hashlib.sha256(f"{job_id}:{attempt}".encode()).digest()[:8]) / 2**64
        if roll < self.failure_rate:
            raise ProviderError("local provider: simulated failure", retryable=True)
        digest = hashlib.sha256(f"{model}\0{prompt}".encode()).hexdigest()
        return {"text": f"[{model}] {prompt[:200]}", "digest": digest, "provider": self.name}

    async def aclose(self) -> None:
        return None


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


class OpenAIProvider:
    """The Chat Completions API of OpenAI, or of any server that speaks it."""

    name = "openai"

    def __init__(
        self, *, api_key: str, base_url: str, timeout: float, http: httpx.AsyncClient | None = None
    ) -> None:
        self._http = http or httpx.AsyncClient(
            base_url=base_url.rstrip("/") + "/",
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            headers={"Authorization": f"Bearer {api_key}"},
        )

    async def generate(
        self, *, job_id: UUID, attempt: int, prompt: str, model: str, params: dict[str, Any]
    ) -> dict[str, Any]:
        body = {**params, "model": model, "messages": [{"role": "user", "content": prompt}]}
        try:
            response = await self._http.post(
                "chat/completions", json=body, headers={"X-Client-Request-Id": f"{job_id}:{attempt}"}
            )
        except httpx.TimeoutException as exc:
            raise ProviderError(f"openai: timed out ({type(exc).__name__})", retryable=True) from exc
        except httpx.TransportError as exc:
            raise ProviderError(f"openai: {type(exc).__name__}: {exc}", retryable=True) from exc
        if response.status_code >= 400:
            retryable = response.status_code in RETRYABLE_STATUSES
            detail = response.text[:500]
            raise ProviderError(
                f"openai: HTTP {response.status_code}: {detail}",
                retryable=retryable,
                retry_after=_retry_after(response) if retryable else None,
            )
        try:
            data = response.json()
            choice = data["choices"][0]
            return {
                "text": choice["message"]["content"],
                "finish_reason": choice.get("finish_reason"),
                "model": data.get("model", model),
                "usage": data.get("usage"),
                "provider": self.name,
            }
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise ProviderError(
                f"openai: unexpected response: {response.text[:200]}", retryable=False
            ) from exc

    async def aclose(self) -> None:
        await self._http.aclose()


def make_provider(settings: Settings) -> Provider:
    """The provider the settings name."""
    if settings.ai_provider == "openai":
        return OpenAIProvider(
            api_key=settings.secret("openai_api_key"),
            base_url=settings.openai_base_url,
            timeout=settings.openai_timeout_seconds,
        )
    return LocalProvider(settings.local_provider_latency_ms, settings.local_provider_failure_rate)
