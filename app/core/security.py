"""Verification of Supabase JWTs: HS256 with the project secret, ES256/RS256 through JWKS."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from uuid import UUID

import jwt
import structlog

from app.settings import Settings

if TYPE_CHECKING:
    import httpx

log = structlog.get_logger(__name__)

ASYMMETRIC_ALGORITHMS = frozenset({"ES256", "RS256"})
# A client sends the same access token with every request until it expires: a token verified
# once is trusted, by its exact bytes, until its `exp` but for no longer than this, so that a
# signing key withdrawn from the JWKS stops being honoured within a minute.
VERIFIED_TOKEN_SECONDS = 60.0
VERIFIED_TOKEN_CACHE_SIZE = 10_000
# A token naming a key id we have not seen may refetch the key set, but not more often than this,
# so forged tokens cannot turn the API into a load generator against the JWKS endpoint.
MIN_JWKS_REFRESH_SECONDS = 30.0


class AuthError(Exception):
    """The token is missing, malformed, forged or expired. The reason is logged, never returned."""


class NoTenantError(Exception):
    """The token is valid but names no organization."""


@dataclass(frozen=True, slots=True)
class Principal:
    """The verified caller: a Supabase user acting for one organization."""

    user_id: UUID
    org_id: UUID
    claims: dict[str, Any]


class JwksCache:
    """Signing keys fetched from a JWKS URL, kept for a TTL and refreshed at a bounded rate."""

    def __init__(self, url: str, ttl_seconds: float, http: httpx.AsyncClient) -> None:
        self._url = url
        self._ttl = ttl_seconds
        self._http = http
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at = float("-inf")
        self._lock = asyncio.Lock()

    async def key(self, kid: str) -> jwt.PyJWK | None:
        """The key with this id, fetching the set when it is stale or the id is new."""
        if self._fresh() and kid in self._keys:
            return self._keys[kid]
        async with self._lock:
            # Another request may have refreshed while this one waited for the lock.
            since = time.monotonic() - self._fetched_at
            if not self._fresh() or (kid not in self._keys and since >= MIN_JWKS_REFRESH_SECONDS):
                await self._refresh()
        return self._keys.get(kid)

    def _fresh(self) -> bool:
        return time.monotonic() - self._fetched_at < self._ttl

    async def _refresh(self) -> None:
        import httpx  # only deployments with asymmetric keys need it

        try:
            response = await self._http.get(self._url)
            response.raise_for_status()
            key_set = jwt.PyJWKSet.from_dict(response.json())
        except (httpx.HTTPError, ValueError, jwt.PyJWTError) as exc:
            # Keep serving the keys we have: a JWKS outage must not log everybody out at once.
            log.warning("jwks_fetch_failed", url=self._url, error=str(exc))
            self._fetched_at = time.monotonic() - self._ttl + MIN_JWKS_REFRESH_SECONDS
            return
        self._keys = {k.key_id: k for k in key_set.keys if k.key_id}
        self._fetched_at = time.monotonic()


def _claim_at(claims: dict[str, Any], path: str) -> Any:
    node: Any = claims
    for part in path.split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node


class TokenVerifier:
    """Turns a bearer token into a Principal, or raises AuthError / NoTenantError."""

    def __init__(self, settings: Settings, jwks: JwksCache | None) -> None:
        self._secret = (
            settings.supabase_jwt_secret.get_secret_value() if settings.supabase_jwt_secret else None
        )
        self._jwks = jwks
        self._audience = settings.jwt_audience
        self._leeway = settings.jwt_leeway_seconds
        self._tenant_claim = settings.tenant_claim
        self._verified: dict[str, tuple[float, Principal]] = {}

    async def verify(self, token: str) -> Principal:
        now = time.time()
        cached = self._verified.get(token)
        if cached is not None and cached[0] > now:
            return cached[1]
        principal = await self._verify(token)
        until = min(float(principal.claims["exp"]), now + VERIFIED_TOKEN_SECONDS)
        if until > now:
            if len(self._verified) >= VERIFIED_TOKEN_CACHE_SIZE:
                self._verified.clear()
            self._verified[token] = (until, principal)
        return principal

    async def _verify(self, token: str) -> Principal:
        claims = await self._decode(token)
        try:
            user_id = UUID(str(claims["sub"]))
        except (KeyError, ValueError) as exc:
            raise AuthError("sub is not a UUID") from exc
        raw_org = _claim_at(claims, self._tenant_claim)
        try:
            org_id = UUID(str(raw_org)) if raw_org is not None else None
        except ValueError:
            org_id = None
        if org_id is None:
            raise NoTenantError(self._tenant_claim)
        return Principal(user_id=user_id, org_id=org_id, claims=claims)

    async def _decode(self, token: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise AuthError("malformed token") from exc
        alg = header.get("alg")
        key: Any
        # The algorithm is chosen by which key we hold, never by the token alone: this is what
        # rejects `alg=none` and HS256-signed-with-a-public-key confusion.
        if alg == "HS256" and self._secret is not None:
            key = self._secret
        elif alg in ASYMMETRIC_ALGORITHMS and self._jwks is not None:
            kid = header.get("kid")
            jwk = await self._jwks.key(kid) if isinstance(kid, str) else None
            if jwk is None or jwk.algorithm_name != alg:
                raise AuthError("unknown signing key")
            key = jwk.key
        else:
            raise AuthError(f"algorithm {alg!r} not accepted")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=self._audience,
                leeway=self._leeway,
                options={"require": ["exp", "sub", "aud"]},
            )
        except jwt.PyJWTError as exc:
            raise AuthError(str(exc)) from exc
        return claims
