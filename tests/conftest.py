"""Shared fixtures: real PostgreSQL and Redis for the session, the app, and tokens."""

from __future__ import annotations

import asyncio
import json
import secrets
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fastapi import FastAPI

from app.local.servers import LocalPgBouncer, LocalPostgres, LocalRedis, free_port
from app.main import create_app
from app.migrate import upgrade
from app.settings import Settings
from tests.http_double import Reply, Request, serve_json
from tests.supabase import SUPERUSER, shape_like_supabase

JWT_SECRET = "test-jwt-secret-of-at-least-thirty-two-bytes"
ORG_A = uuid.UUID("aaaaaaaa-0000-4000-8000-000000000001")
ORG_B = uuid.UUID("bbbbbbbb-0000-4000-8000-000000000002")
USER_A = uuid.UUID("aaaaaaaa-1111-4000-8000-000000000001")
USER_B = uuid.UUID("bbbbbbbb-1111-4000-8000-000000000002")
TABLES = "generation_logs, generations, organization_members, organizations"


@dataclass
class Servers:
    """The session's database and cache servers."""

    postgres: LocalPostgres
    redis: LocalRedis

    @property
    def dsn(self) -> str:
        return self.postgres.dsn()


@pytest.fixture(scope="session")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    root = tmp_path_factory.mktemp("servers")
    postgres = LocalPostgres(root / "postgres", free_port(), durable=False).start()
    redis = LocalRedis(root / "redis", free_port(), durable=False).start()
    try:
        upgrade(postgres.dsn())
        yield Servers(postgres, redis)
    finally:
        redis.stop()
        postgres.stop()


@dataclass
class Supabase:
    """A cluster set up as Supabase sets up a project's database (tests/supabase.py), migrated
    by its `postgres`, which is no superuser there. The server's log is kept, for its errors."""

    postgres: LocalPostgres
    log: Path

    @property
    def dsn(self) -> str:
        """As `postgres`: the role the app migrates and runs as on Supabase."""
        return self.postgres.dsn(user="postgres")

    @property
    def admin_dsn(self) -> str:
        """As the cluster's superuser, `supabase_admin`, which the app never uses."""
        return self.postgres.dsn()


@pytest.fixture(scope="session")
def supabase(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Supabase]:
    root = tmp_path_factory.mktemp("supabase")
    log = root / "postgres.log"
    postgres = LocalPostgres(root / "postgres", free_port(), durable=False, superuser=SUPERUSER)
    with log.open("ab") as out:
        postgres.start(stdout=out, stderr=out)
    try:
        database = Supabase(postgres, log)
        asyncio.run(shape_like_supabase(database.admin_dsn, database.dsn))
        upgrade(database.dsn)
        yield database
    finally:
        postgres.stop()


@pytest.fixture(scope="session")
def pooler(supabase: Supabase, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalPgBouncer]:
    """PgBouncer in transaction mode with three server connections, in front of `supabase`:
    the shape of Supabase's own poolers. Fails, naming the package, where it is not installed."""
    bouncer = LocalPgBouncer(
        tmp_path_factory.mktemp("pgbouncer") / "data",
        free_port(),
        server_port=supabase.postgres.port,
        users={"postgres": secrets.token_urlsafe(16)},
        pool_size=3,
    )
    # It writes the same lines to its log file.
    bouncer.start(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield bouncer
    finally:
        bouncer.stop()


@dataclass
class Jwks:
    """An HTTP server publishing an EC and an RSA signing key, as a Supabase project does."""

    url: str
    ec_key: ec.EllipticCurvePrivateKey
    rsa_key: rsa.RSAPrivateKey
    requests: list[Request] = field(default_factory=list)


@pytest.fixture(scope="session")
def jwks() -> Iterator[Jwks]:
    ec_key = ec.generate_private_key(ec.SECP256R1())
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    keys = []
    for kid, alg, key in (("ec-1", "ES256", ec_key), ("rsa-1", "RS256", rsa_key)):
        algorithm = jwt.get_algorithm_by_name(alg)
        jwk = json.loads(algorithm.to_jwk(key.public_key()))
        keys.append({**jwk, "kid": kid, "alg": alg, "use": "sig"})
    with serve_json(lambda request: Reply(200, {"keys": keys})) as served:
        yield Jwks(
            url=f"{served.url}/auth/v1/.well-known/jwks.json",
            ec_key=ec_key,
            rsa_key=rsa_key,
            requests=served.requests,
        )


@pytest.fixture
def settings(servers: Servers, jwks: Jwks) -> Settings:
    return Settings(
        app_env="test",
        database_url=servers.dsn,
        migrations_database_url=servers.dsn,
        redis_url=servers.redis.url(),
        supabase_jwt_secret=JWT_SECRET,
        supabase_jwks_url=jwks.url,
        log_format="console",
    )


async def fetch(dsn: str, query: str, *args: Any) -> list[asyncpg.Record]:
    """The rows of one query on a connection of its own (straight to the server, never pooled)."""
    conn = await asyncpg.connect(dsn)
    try:
        rows: list[asyncpg.Record] = await conn.fetch(query, *args)
        return rows
    finally:
        await conn.close()


async def truncate(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f"TRUNCATE {TABLES} CASCADE")
        # Limits a test set: back to the migration's defaults.
        await conn.execute(
            "DELETE FROM liftoff.tenant_limits WHERE organization_id <> liftoff.default_limits_id();"
            " UPDATE liftoff.tenant_limits SET max_active_jobs = 100, max_submissions_per_minute = 300"
        )
    finally:
        await conn.close()


@pytest.fixture
async def app(settings: Settings, servers: Servers) -> AsyncIterator[FastAPI]:
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application
    await truncate(servers.dsn)


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield http


TokenFactory = Callable[..., str]


def make_token(
    *,
    org: uuid.UUID | None = ORG_A,
    user: uuid.UUID = USER_A,
    key: Any = JWT_SECRET,
    algorithm: str = "HS256",
    kid: str | None = None,
    lifetime: int = 3600,
    **claims: Any,
) -> str:
    """A Supabase-shaped access token; keyword claims override or add to the defaults."""
    now = int(time.time())
    payload: dict[str, Any] = {
        "sub": str(user),
        "aud": "authenticated",
        "role": "authenticated",
        "iat": now,
        "exp": now + lifetime,
    }
    if org is not None:
        payload["app_metadata"] = {"organization_id": str(org)}
    payload.update(claims)
    headers = {"kid": kid} if kid else None
    return jwt.encode(payload, key, algorithm=algorithm, headers=headers)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def auth_a() -> dict[str, str]:
    return bearer(make_token(org=ORG_A, user=USER_A))


@pytest.fixture
def auth_b() -> dict[str, str]:
    return bearer(make_token(org=ORG_B, user=USER_B))


@pytest.fixture
def repo_root() -> Path:
    return Path(__file__).resolve().parents[1]
