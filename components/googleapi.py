"""Google Cloud REST APIs through components/rest.py, with Application Default Credentials."""

from __future__ import annotations

from typing import Any

from components.rest import RestClient

SCOPE = "https://www.googleapis.com/auth/cloud-platform"


class GoogleToken:
    """An OAuth access token from Application Default Credentials (what `pulumi up` runs with).

    The credentials are kept and refreshed only when expired: under workload identity federation
    each refresh is a token exchange and an impersonation call. They are never pickled (the
    engine stores a dynamic provider, and what it holds, in the state).
    """

    def __init__(self) -> None:
        self._credentials: Any = None

    def __call__(self) -> str:
        import google.auth
        import google.auth.transport.requests

        if self._credentials is None:
            self._credentials, _ = google.auth.default(scopes=[SCOPE])
        if not self._credentials.valid:
            self._credentials.refresh(google.auth.transport.requests.Request())
        return str(self._credentials.token)

    def __getstate__(self) -> dict[str, Any]:
        return {"_credentials": None}


def google_api(endpoint: str, token: Any = None, **options: Any) -> RestClient:
    """A client for one Google API endpoint (run.googleapis.com, secretmanager.googleapis.com)."""
    return RestClient(endpoint, token or GoogleToken(), **options)
