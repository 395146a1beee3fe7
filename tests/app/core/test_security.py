"""Supabase JWT verification, HS256 and JWKS, through the API: every failure is a bare 401."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from app.core.security import AuthError, JwksCache, TokenVerifier
from app.settings import Settings
from tests.conftest import JWT_SECRET, ORG_A, USER_A, Jwks, bearer, make_token

pytestmark = pytest.mark.integration

URL = "/v1/generations"
UNAUTHORIZED = {"error": {"code": "unauthorized", "message": "A valid bearer token is required."}}


def _b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


def unsigned(alg: str = "none") -> str:
    now = int(time.time())
    claims = {
        "sub": str(USER_A),
        "aud": "authenticated",
        "exp": now + 600,
        "app_metadata": {"organization_id": str(ORG_A)},
    }
    return f"{_b64({'alg': alg, 'typ': 'JWT'})}.{_b64(claims)}."


def es256(jwks: Jwks, **claims: object) -> str:
    return make_token(key=jwks.ec_key, algorithm="ES256", kid="ec-1", **claims)  # type: ignore[arg-type]


def rs256(jwks: Jwks, **claims: object) -> str:
    return make_token(key=jwks.rsa_key, algorithm="RS256", kid="rsa-1", **claims)  # type: ignore[arg-type]


async def assert_401(client: httpx.AsyncClient, headers: dict[str, str]) -> None:
    response = await client.get(URL, headers=headers)
    assert response.status_code == 401
    assert response.json() == UNAUTHORIZED
    assert response.headers["WWW-Authenticate"] == "Bearer"


class TestHs256:
    async def test_valid_token_is_accepted(self, client):
        response = await client.get(URL, headers=bearer(make_token()))
        assert response.status_code == 200

    @pytest.mark.parametrize(
        "headers",
        [
            {},
            {"Authorization": ""},
            {"Authorization": "Bearer"},
            {"Authorization": "Basic dXNlcjpwYXNz"},
            {"Authorization": "Bearer not.a.jwt"},
            {"Authorization": "Bearer " + "x" * 40},
        ],
        ids=["missing", "empty", "no-token", "basic", "garbage", "opaque"],
    )
    async def test_missing_or_malformed_is_401(self, client, headers):
        await assert_401(client, headers)

    async def test_expired_is_401(self, client):
        await assert_401(client, bearer(make_token(lifetime=-120)))

    async def test_expiry_within_leeway_is_accepted(self, client):
        response = await client.get(URL, headers=bearer(make_token(lifetime=-5)))
        assert response.status_code == 200

    async def test_not_yet_valid_is_401(self, client):
        await assert_401(client, bearer(make_token(nbf=int(time.time()) + 600)))

    async def test_forged_signature_is_401(self, client):
        await assert_401(client, bearer(make_token(key="another-secret-that-is-long-enough-too")))

    async def test_tampered_payload_is_401(self, client):
        header, _, signature = make_token().split(".")
        payload = _b64({"sub": str(USER_A), "aud": "authenticated", "exp": int(time.time()) + 600})
        await assert_401(client, bearer(f"{header}.{payload}.{signature}"))

    @pytest.mark.parametrize("alg", ["none", "None", "NONE"])
    async def test_alg_none_is_401(self, client, alg):
        await assert_401(client, bearer(unsigned(alg)))

    async def test_wrong_audience_is_401(self, client):
        await assert_401(client, bearer(make_token(aud="anon")))

    async def test_missing_exp_is_401(self, client):
        token = jwt.encode({"sub": str(USER_A), "aud": "authenticated"}, JWT_SECRET, algorithm="HS256")
        await assert_401(client, bearer(token))

    async def test_non_uuid_subject_is_401(self, client):
        await assert_401(client, bearer(make_token(sub="service")))

    async def test_hs512_is_401(self, client):
        # The project's own secret, but an algorithm the API does not accept.
        with pytest.warns(jwt.warnings.InsecureKeyLengthWarning):
            token = make_token(algorithm="HS512")
        await assert_401(client, bearer(token))


class TestJwks:
    async def test_es256_is_accepted(self, client, jwks):
        assert (await client.get(URL, headers=bearer(es256(jwks)))).status_code == 200

    async def test_rs256_is_accepted(self, client, jwks):
        assert (await client.get(URL, headers=bearer(rs256(jwks)))).status_code == 200

    async def test_keys_are_cached(self, client, jwks):
        before = len(jwks.requests)
        for _ in range(5):
            assert (await client.get(URL, headers=bearer(es256(jwks)))).status_code == 200
        assert len(jwks.requests) - before <= 1

    async def test_key_not_in_the_set_is_401(self, client, jwks):
        stranger = ec.generate_private_key(ec.SECP256R1())
        await assert_401(client, bearer(make_token(key=stranger, algorithm="ES256", kid="ec-1")))

    async def test_unknown_kid_is_401(self, client, jwks):
        await assert_401(client, bearer(make_token(key=jwks.ec_key, algorithm="ES256", kid="ec-404")))

    async def test_alg_mismatch_with_key_is_401(self, client, jwks):
        # RS256 header naming the EC key.
        await assert_401(client, bearer(make_token(key=jwks.rsa_key, algorithm="RS256", kid="ec-1")))

    async def test_hs256_signed_with_the_public_key_is_401(self, client, jwks):
        """The classic confusion attack: the public key used as an HMAC secret."""
        pem = jwks.rsa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        payload = {"sub": str(USER_A), "aud": "authenticated", "exp": int(time.time()) + 600}
        header = _b64({"alg": "HS256", "typ": "JWT", "kid": "rsa-1"})
        body = f"{header}.{_b64(payload)}"
        signature = (
            base64.urlsafe_b64encode(hmac.new(pem, body.encode(), hashlib.sha256).digest())
            .decode()
            .rstrip("=")
        )
        await assert_401(client, bearer(f"{body}.{signature}"))

    async def test_expired_es256_is_401(self, client, jwks):
        await assert_401(client, bearer(es256(jwks, lifetime=-300)))

    async def test_wrong_audience_es256_is_401(self, client, jwks):
        await assert_401(client, bearer(es256(jwks, aud="anon")))


async def test_unknown_kids_do_not_hammer_the_jwks_endpoint(settings: Settings, jwks: Jwks):
    async with httpx.AsyncClient() as http:
        verifier = TokenVerifier(settings, JwksCache(jwks.url, 600, http))
        before = len(jwks.requests)
        for i in range(20):
            token = make_token(key=jwks.ec_key, algorithm="ES256", kid=f"forged-{i}")
            with pytest.raises(AuthError, match="unknown signing key"):
                await verifier.verify(token)
        assert len(jwks.requests) - before == 1


async def test_unreachable_jwks_rejects_without_error(settings: Settings, jwks: Jwks):
    async with httpx.AsyncClient() as http:
        verifier = TokenVerifier(settings, JwksCache("http://127.0.0.1:9/jwks.json", 600, http))
        with pytest.raises(AuthError, match="unknown signing key"):
            await verifier.verify(es256(jwks))


async def test_tenant_claim_path_is_configurable(settings: Settings):
    custom = settings.model_copy(update={"tenant_claim": "org.id"})
    verifier = TokenVerifier(custom, None)
    now = int(time.time())
    token = jwt.encode(
        {"sub": str(USER_A), "aud": "authenticated", "exp": now + 60, "org": {"id": str(ORG_A)}},
        JWT_SECRET,
        algorithm="HS256",
    )
    principal = await verifier.verify(token)
    assert principal.org_id == ORG_A
