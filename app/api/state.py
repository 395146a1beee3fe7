"""The resources one API process holds for its lifetime."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from uuid import UUID

import asyncpg
from redis.asyncio import Redis

from app import crud
from app.core.metrics import ApiMetrics
from app.core.pg import Database
from app.core.security import JwksCache, Principal, TokenVerifier
from app.settings import Settings

if TYPE_CHECKING:
    import httpx

    from app.core.wake import Waker

# Memberships already recorded by this process; past this many the set starts over.
MEMBERSHIP_CACHE_SIZE = 10_000


@dataclass
class ApiState:
    """Database, Redis client, token verifier and metrics of a running API."""

    settings: Settings
    db: Database
    redis: Redis
    verifier: TokenVerifier
    metrics: ApiMetrics
    http: httpx.AsyncClient | None = None
    waker: Waker | None = None
    _members: set[tuple[UUID, UUID]] = field(default_factory=set)

    @classmethod
    async def open(cls, settings: Settings, metrics: ApiMetrics) -> ApiState:
        timeout = settings.ready_timeout_seconds
        http = jwks = None
        if settings.supabase_jwks_url:
            # Imported only when tokens are asymmetric: HS256 deployments never load httpx.
            import httpx

            http = httpx.AsyncClient(timeout=httpx.Timeout(5.0), follow_redirects=False)
            jwks = JwksCache(settings.supabase_jwks_url, settings.jwks_cache_seconds, http)
        db = Database(settings)
        await db.open()
        redis = Redis.from_url(
            settings.secret("redis_url"), socket_connect_timeout=timeout, socket_timeout=timeout
        )
        waker = None
        if settings.worker_wake_url:
            import httpx

            from app.core.wake import Waker

            http = http or httpx.AsyncClient(timeout=httpx.Timeout(5.0), follow_redirects=False)
            waker = Waker(settings, redis, http)
        return cls(
            settings=settings,
            db=db,
            redis=redis,
            verifier=TokenVerifier(settings, jwks),
            metrics=metrics,
            http=http,
            waker=waker,
        )

    async def close(self) -> None:
        if self.waker is not None:
            await self.waker.aclose()
        await self.db.close()
        await self.redis.aclose()
        if self.http is not None:
            await self.http.aclose()

    @asynccontextmanager
    async def tenant(self, principal: Principal) -> AsyncIterator[asyncpg.Connection]:
        """A transaction confined by RLS to the principal's organization; commits on exit.

        Bounded by DB_REQUEST_TIMEOUT_SECONDS: a database that is down or frozen is a
        TimeoutError or a connection error, which the error handlers answer with 503.
        """
        async with (
            asyncio.timeout(self.settings.db_request_timeout_seconds),
            self.db.tenant(
                principal.claims,
                tenant_claim=self.settings.tenant_claim,
                statement_timeout_ms=self.settings.db_statement_timeout_ms,
            ) as conn,
        ):
            yield conn

    async def submit(self, principal: Principal, **job: Any) -> tuple[dict[str, Any], bool]:
        """Queue a job for the principal in one statement (see crud.submit_generation).

        On a direct connection the statement is its own transaction: no BEGIN and COMMIT round
        trips. Behind a transaction pooler it is wrapped in one, so that its prepare and
        execute reach the same server connection.
        """
        key = (principal.org_id, principal.user_id)
        provision = key not in self._members
        async with (
            asyncio.timeout(self.settings.db_request_timeout_seconds),
            self.db.connection() as conn,
        ):
            submit = crud.submit_generation(
                conn,
                claims=principal.claims,
                tenant_claim=self.settings.tenant_claim,
                provision=provision,
                org_id=principal.org_id,
                user_id=principal.user_id,
                **job,
            )
            if self.db.pooler:
                async with conn.transaction():
                    row, created = await submit
            else:
                row, created = await submit
        if provision:
            if len(self._members) >= MEMBERSHIP_CACHE_SIZE:
                self._members.clear()
            self._members.add(key)
        return row, created
