"""The resources one API process holds for its lifetime."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
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
    _pooler: bool = False

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
            engine=engine_for(
                settings,
                application_name="liftoff-api",
                request_timeout=settings.db_request_timeout_seconds,
                pre_ping=False,
            ),
            redis=Redis.from_url(
                settings.secret("redis_url"),
                socket_connect_timeout=timeout,
                socket_timeout=timeout,
            ),
            http=http,
            verifier=TokenVerifier(settings, jwks),
            metrics=metrics,
            _pooler=settings.transaction_pooler(),
        )

    async def close(self) -> None:
        await self.engine.dispose()
        await self.redis.aclose()
        await self.http.aclose()

    @asynccontextmanager
    async def tenant(self, principal: Principal) -> AsyncIterator[AsyncConnection]:
        """A transaction confined by RLS to the principal's organization; commits on exit.

        Bounded by DB_REQUEST_TIMEOUT_SECONDS: a database that is down or frozen is a
        TimeoutError or a connection error, which the error handlers answer with 503.
        """
        async with (
            asyncio.timeout(self.settings.db_request_timeout_seconds),
            tenant_transaction(
                self.engine,
                principal.claims,
                tenant_claim=self.settings.tenant_claim,
                statement_timeout_ms=self.settings.db_statement_timeout_ms,
            ) as conn,
        ):
            yield conn

    async def submit(self, principal: Principal, **job: Any) -> tuple[dict[str, Any], bool]:
        """Queue a job for the principal in one statement (see crud.submit_generation).

        On the driver's connection: SQLAlchemy's statement machinery costs more than the
        statement itself on this path. On a direct connection the statement is its own
        transaction; behind a transaction pooler it is wrapped in one, so that its prepare
        and execute reach the same server connection.
        """
        key = (principal.org_id, principal.user_id)
        provision = key not in self._members
        async with (
            asyncio.timeout(self.settings.db_request_timeout_seconds),
            self.engine.connect() as conn,
        ):
            driver = (await conn.get_raw_connection()).driver_connection
            submit = functools.partial(
                crud.submit_generation,
                driver,
                claims=principal.claims,
                tenant_claim=self.settings.tenant_claim,
                provision=provision,
                org_id=principal.org_id,
                user_id=principal.user_id,
                **job,
            )
            if self._pooler:
                async with driver.transaction():
                    row, created = await submit()
            else:
                row, created = await submit()
        if provision:
            if len(self._members) >= MEMBERSHIP_CACHE_SIZE:
                self._members.clear()
            self._members.add(key)
        return row, created
