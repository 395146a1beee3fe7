"""Tokens from the metadata server of the Cloud Run instance the process runs on.

Two GETs, as Cloud Run documents them
(https://cloud.google.com/run/docs/container-contract#metadata-server): an access token for
Google APIs (the scaler's calls to the Cloud Run Admin API) and an ID token for a private Cloud
Run service (the API's wake request to the scaler). google-auth would do the same through
`requests`, a second HTTP stack in the image for these two calls; they are written here on the
app's httpx instead.
"""

from __future__ import annotations

import time

import httpx

METADATA = "http://metadata.google.internal/computeMetadata/v1/instance/service-accounts/default"
HEADERS = {"Metadata-Flavor": "Google"}
# Renew a token this long before it expires: a call made with it must not outlive it.
MARGIN_SECONDS = 60.0


class MetadataError(RuntimeError):
    """The metadata server did not give a token."""


class AccessToken:
    """The instance identity's OAuth access token, cached until shortly before it expires."""

    def __init__(self, http: httpx.AsyncClient, metadata: str = METADATA) -> None:
        self.http = http
        self.metadata = metadata
        self._token: str | None = None
        self._expires = 0.0

    async def get(self) -> str:
        if self._token is None or time.monotonic() >= self._expires - MARGIN_SECONDS:
            body = await _get(self.http, f"{self.metadata}/token")
            try:
                self._token, lifetime = str(body.json()["access_token"]), float(body.json()["expires_in"])
            except (ValueError, KeyError, TypeError) as exc:
                raise MetadataError(f"the metadata server's token is not JSON with a token: {exc}") from exc
            self._expires = time.monotonic() + lifetime
        return self._token


async def id_token(http: httpx.AsyncClient, audience: str, metadata: str = METADATA) -> str:
    """An ID token of the instance identity for `audience` (a Cloud Run service's URL)."""
    return (await _get(http, f"{metadata}/identity", params={"audience": audience})).text.strip()


async def _get(http: httpx.AsyncClient, url: str, params: dict[str, str] | None = None) -> httpx.Response:
    try:
        response = await http.get(url, headers=HEADERS, params=params, timeout=5.0)
    except httpx.HTTPError as exc:
        raise MetadataError(f"the metadata server is not reachable: {exc!r}") from exc
    if response.status_code != 200:
        raise MetadataError(f"the metadata server answered {response.status_code}: {response.text[:200]}")
    return response
