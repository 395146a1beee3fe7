"""One JSON-over-HTTPS client for the dynamic providers and tools: bearer token, bounded retries.

Retries follow what is safe to repeat: a 429 waits as its Retry-After says (either form, RFC 9110
section 10.2.3); a 5xx or a dropped connection backs off exponentially, but a POST (which may
have started something: a project, a job execution) is repeated only when it surely did not
reach the server (a refused connection, or a 503, which is answered before any work is done).
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Callable
from typing import Any

import httpx


class ApiError(RuntimeError):
    """The API refused a call, or kept failing; `status` is the last HTTP status, if any."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class NotFoundError(ApiError):
    """404: the thing is not there (deleted outside Pulumi, say)."""


class RestClient:
    """Calls one API's base URL with `Authorization: Bearer <token()>`."""

    def __init__(
        self,
        base_url: str,
        token: Callable[[], str],
        *,
        attempts: int = 6,
        max_backoff_seconds: float = 60.0,
        timeout_seconds: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.http = httpx.Client(
            base_url=base_url.rstrip("/"), headers={"Accept": "application/json"}, timeout=timeout_seconds
        )
        self.token = token
        self.attempts = attempts
        self.max_backoff_seconds = max_backoff_seconds
        self.sleep = sleep

    def __enter__(self) -> RestClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.http.close()

    def call(self, method: str, path: str, *, json: Any = None, params: dict[str, str] | None = None) -> Any:
        """The decoded JSON answer (None when empty); ApiError, or NotFoundError for a 404."""
        for attempt in range(1, self.attempts + 1):
            last = attempt == self.attempts
            headers = {"Authorization": f"Bearer {self.token()}"}
            try:
                response = self.http.request(method, path, json=json, params=params, headers=headers)
            except httpx.TransportError as exc:
                if last or not _may_repeat(method, exc):
                    raise ApiError(f"{method} {path}: {type(exc).__name__}: {exc}") from exc
                self.sleep(self.backoff(attempt, None))
                continue
            if response.status_code == 404:
                raise NotFoundError(f"{method} {path}: 404 {_body(response)}", 404)
            if not last and _retryable(method, response.status_code):
                self.sleep(self.backoff(attempt, response.headers.get("Retry-After")))
                continue
            if response.is_error:
                raise ApiError(
                    f"{method} {path}: {response.status_code} {_body(response)}", response.status_code
                )
            return response.json() if response.content else None
        raise ApiError(f"{method} {path}: gave up after {self.attempts} attempts")

    def pages(self, path: str, key: str, *, params: dict[str, str] | None = None) -> list[Any]:
        """Every item of a paginated list (`nextPageToken`, https://google.aip.dev/158)."""
        items: list[Any] = []
        query = dict(params or {})
        while True:
            page = self.call("GET", path, params=query) or {}
            items += page.get(key) or []
            token = page.get("nextPageToken")
            if not token:
                return items
            query["pageToken"] = str(token)

    def backoff(self, attempt: int, retry_after: str | None) -> float:
        wait = retry_after_seconds(retry_after)
        if wait is None:
            wait = float(2 ** (attempt - 1))
        return min(max(wait, 0.0), self.max_backoff_seconds)


def _may_repeat(method: str, exc: httpx.TransportError) -> bool:
    return method != "POST" or isinstance(exc, httpx.ConnectError)


def _retryable(method: str, status: int) -> bool:
    if status == 429:
        return True
    if method == "POST":
        return status == 503
    return 500 <= status < 600


def retry_after_seconds(value: str | None) -> float | None:
    """Retry-After as seconds, from either of its forms."""
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return when.timestamp() - time.time()


def _body(response: httpx.Response) -> str:
    return response.text[:500]
