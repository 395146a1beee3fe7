"""The resources one API process holds for its lifetime."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from uuid import UUID

import httpx
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app import crud
from app.core.db import engine_for, tenant_transaction
from app.core.metrics import ApiMetrics
from app.core.security import JwksCache, Principal, TokenVerifier
from app.settings import Settings

# Memberships already recorded by this process; past this many the set starts over.
MEMBERSHIP_CACHE_SIZE = 10_000


@dataclass
class ApiState:
    """Engine, Redis client, token verifier and metrics of a running API."""

    settings: Settings
    engine: AsyncEngine
    redis: Redis
    http: httpx.AsyncClient
    verifier: TokenVerifier
    metrics: ApiMetrics
    _members: set[tuple[UUID, UUID]] = field(default_factory=set)

    @classmethod
    def open(cls, settings: Settings, metrics: ApiMetrics) -> ApiState:
        timeout = settings.ready_timeout_seconds
        http = httpx.AsyncClient(timeout=httpx.Timeout(5.0), follow_redirects=False)
        jwks = (
            JwksCache(settings.supabase_jwks_url, settings.jwks_cache_seconds, http)
            if settings.supabase_jwks_url
            else None
        )
        return cls(
            settings=settings,
            engine=engine_for(settings, application_name="liftoff-api"),
            redis=Redis.from_url(
                settings.secret("redis_url"),
                socket_connect_timeout=timeout,
                socket_timeout=timeout,
            ),
            http=http,
            verifier=TokenVerifier(settings, jwks),
            metrics=metrics,
        )

    async def close(self) -> None:
        await self.engine.dispose()
        await self.redis.aclose()
        await self.http.aclose()

    @asynccontextmanager
    async def tenant(
        self, principal: Principal, *, provision: bool = False
    ) -> AsyncIterator[AsyncConnection]:
        """A transaction confined by RLS to the principal's organization; commits on exit."""
        key = (principal.org_id, principal.user_id)
        needs_provision = provision and key not in self._members

        async def record_membership(conn: AsyncConnection) -> None:
            await crud.ensure_membership(conn, principal.org_id, principal.user_id)

        async with tenant_transaction(
            self.engine,
            principal.claims,
            tenant_claim=self.settings.tenant_claim,
            statement_timeout_ms=self.settings.db_statement_timeout_ms,
            before=record_membership if needs_provision else None,
        ) as conn:
            yield conn
        if needs_provision:
            if len(self._members) >= MEMBERSHIP_CACHE_SIZE:
                self._members.clear()
            self._members.add(key)
