"""A small JSON client for Google Cloud REST APIs: bearer token, retries on 429 and 5xx, a deadline."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx

SCOPE = "https://www.googleapis.com/auth/cloud-platform"
# Answers worth retrying: rate limits and the control plane's transient failures.
RETRYABLE = frozenset({429, 500, 502, 503, 504})


class GoogleApiError(Exception):
    """The API refused a call, or kept failing until the deadline."""


def google_token() -> str:
    """An OAuth access token from Application Default Credentials (what `pulumi up` runs with)."""
    import google.auth
    import google.auth.transport.requests

    credentials, _ = google.auth.default(scopes=[SCOPE])
    credentials.refresh(google.auth.transport.requests.Request())  # type: ignore[no-untyped-call]
    return str(credentials.token)


class GoogleApi:
    """Calls one API endpoint; `token` and `sleep` are parameters so tests can run it locally."""

    def __init__(
        self,
        endpoint: str,
        token: Callable[[], str] = google_token,
        backoff_seconds: float = 5.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.http = httpx.Client(base_url=endpoint.rstrip("/"), timeout=30.0)
        self.token = token
        self.backoff_seconds = backoff_seconds
        self.sleep = sleep

    def __enter__(self) -> GoogleApi:
        return self

    def __exit__(self, *exc: object) -> None:
        self.http.close()

    def call(
        self,
        method: str,
        path: str,
        *,
        deadline: float,
        json: Any = None,
        params: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """The JSON answer; retries what is retryable (honouring Retry-After) until `deadline`."""
        delay = self.backoff_seconds
        while True:
            headers = {"Authorization": f"Bearer {self.token()}"}
            try:
                response = self.http.request(method, path, json=json, params=params, headers=headers)
            except httpx.TransportError as error:
                failure = f"{type(error).__name__}: {error}"
            else:
                if response.status_code < 300:
                    body: dict[str, Any] = response.json()
                    return body
                if response.status_code not in RETRYABLE:
                    raise GoogleApiError(f"{method} {path}: {response.status_code} {response.text[:500]}")
                failure = f"{response.status_code}"
                delay = _retry_after(response, delay)
            if time.monotonic() + delay > deadline:
                raise GoogleApiError(f"{method} {path}: still failing ({failure}) at the deadline")
            self.sleep(delay)
            delay = min(delay * 2, 60.0)

    def pages(
        self, path: str, key: str, *, deadline: float, params: dict[str, str] | None = None
    ) -> list[Any]:
        """Every item of a paginated list (`nextPageToken`, AIP-158)."""
        items: list[Any] = []
        query = dict(params or {})
        while True:
            page = self.call("GET", path, deadline=deadline, params=query)
            items += page.get(key) or []
            token = page.get("nextPageToken")
            if not token:
                return items
            query["pageToken"] = str(token)


def _retry_after(response: httpx.Response, fallback: float) -> float:
    value = response.headers.get("Retry-After", "")
    return float(value) if value.isdigit() else fallback
