"""Anchor: POST /v1/generations written by hand, as a careful developer would without a framework
of their own: PyJWT HS256 check, one asyncpg `INSERT ... RETURNING`, one `LPUSH`, 202.

No RLS, no idempotency, no metrics, no access log: the floor Liftoff is compared against.
Not a project code path. Reads BENCH_DSN, BENCH_REDIS_URL and BENCH_JWT_SECRET.
"""

import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from uuid import UUID

import asyncpg
import jwt
from fastapi import FastAPI, Header, HTTPException, Request, status
from pydantic import BaseModel, Field
from redis.asyncio import Redis

SECRET = os.environ["BENCH_JWT_SECRET"]


class Body(BaseModel):
    prompt: str = Field(min_length=1)
    model: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    app.state.pool = await asyncpg.create_pool(os.environ["BENCH_DSN"], min_size=10, max_size=10)
    app.state.redis = Redis.from_url(os.environ["BENCH_REDIS_URL"])
    yield
    await app.state.pool.close()
    await app.state.redis.aclose()


app = FastAPI(lifespan=lifespan)


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/v1/generations", status_code=status.HTTP_202_ACCEPTED)
async def create(body: Body, request: Request, authorization: str = Header()) -> dict[str, Any]:
    try:
        claims = jwt.decode(
            authorization.removeprefix("Bearer "), SECRET, ["HS256"], audience="authenticated"
        )
        org = UUID(claims["app_metadata"]["organization_id"])
        user = UUID(claims["sub"])
    except (jwt.PyJWTError, KeyError, ValueError):
        raise HTTPException(401) from None
    row = await request.app.state.pool.fetchrow(
        "INSERT INTO generations (organization_id, created_by, prompt, model, params)"
        " VALUES ($1, $2, $3, $4, $5::jsonb) RETURNING id, ai_status, created_at",
        org,
        user,
        body.prompt,
        body.model or "gpt-4o-mini",
        json.dumps(body.params),
    )
    await request.app.state.redis.lpush("liftoff:jobs", str(row["id"]))
    return {"id": str(row["id"]), "status": row["ai_status"], "created_at": row["created_at"].isoformat()}
