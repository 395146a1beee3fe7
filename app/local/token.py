"""Mint dev JWTs for the seeded tenants of the local system, and only there.

`python -m app.local.token [--tenant demo|other]` prints a token. It refuses to run where the
local system's secret does not exist, or where anything says this is not the local system,
so it can never mint a token that a deployed API would accept.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any
from uuid import UUID

import jwt

from app.local.config import TENANTS, LocalConfig

# Cloud Run sets these in services, jobs and worker pools.
_CLOUD_MARKERS = ("K_SERVICE", "CLOUD_RUN_JOB", "CLOUD_RUN_WORKER_POOL")
DEFAULT_TTL_SECONDS = 12 * 3600


class NotLocalError(RuntimeError):
    """The tool was asked to run outside the local system."""


def _nested(path: str, value: str) -> dict[str, Any]:
    node: dict[str, Any] = {}
    top = node
    parts = path.split(".")
    for part in parts[:-1]:
        node[part] = {}
        node = node[part]
    node[parts[-1]] = value
    return top


def mint_dev_token(
    secret: str,
    *,
    user_id: UUID,
    org_id: UUID,
    tenant_claim: str = "app_metadata.organization_id",
    ttl_seconds: int = DEFAULT_TTL_SECONDS,
) -> str:
    """An HS256 token shaped like a Supabase access token."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": "liftoff-local",
        "sub": str(user_id),
        "aud": "authenticated",
        "role": "authenticated",
        "iat": now,
        "exp": now + ttl_seconds,
    }
    org_claim = _nested(tenant_claim, str(org_id))
    for key, value in org_claim.items():
        if isinstance(value, dict) and isinstance(claims.get(key), dict):
            claims[key].update(value)
        else:
            claims[key] = value
    return jwt.encode(claims, secret, algorithm="HS256")


def local_secret(config: LocalConfig) -> str:
    """The local signing secret, or NotLocalError saying why this is not the local system."""
    app_env = os.environ.get("APP_ENV")
    if app_env not in (None, "local"):
        raise NotLocalError(f"APP_ENV is {app_env!r}; dev tokens exist only where APP_ENV is local")
    marker = next((m for m in _CLOUD_MARKERS if m in os.environ), None)
    if marker is not None:
        raise NotLocalError(f"{marker} is set: this is Cloud Run, not the local system")
    secret = config.jwt_secret()
    if secret is None:
        raise NotLocalError(f"no local system in {config.root} (run `make dev` first)")
    env_secret = os.environ.get("SUPABASE_JWT_SECRET")
    if env_secret is not None and env_secret != secret:
        raise NotLocalError("SUPABASE_JWT_SECRET is not the local system's secret")
    return secret


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.local.token", description=__doc__)
    parser.add_argument("--tenant", choices=sorted(TENANTS), default="demo")
    parser.add_argument("--ttl", type=int, default=DEFAULT_TTL_SECONDS, help="lifetime in seconds")
    args = parser.parse_args(argv)
    if args.ttl <= 0:
        parser.error("--ttl must be positive")
    try:
        secret = local_secret(LocalConfig.from_env())
    except NotLocalError as exc:
        print(f"refusing to mint a dev token: {exc}", file=sys.stderr)
        return 2
    _, org_id, user_id = TENANTS[args.tenant]
    tenant_claim = os.environ.get("TENANT_CLAIM", "app_metadata.organization_id")
    print(
        mint_dev_token(
            secret, user_id=user_id, org_id=org_id, tenant_claim=tenant_claim, ttl_seconds=args.ttl
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
