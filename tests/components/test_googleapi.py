"""GoogleToken: Application Default Credentials fetched once, refreshed only when expired, never pickled."""

from __future__ import annotations

import pickle
from typing import Any

import google.auth
import pytest

from components.googleapi import SCOPE, GoogleToken, google_api
from components.rest import RestClient

pytestmark = pytest.mark.unit


class Credentials:
    """Stands in for google.auth credentials: valid until `expire()`, a new token per refresh."""

    def __init__(self) -> None:
        self.valid = False
        self.token: str | None = None
        self.refreshes = 0

    def refresh(self, request: Any) -> None:
        assert type(request).__module__ == "google.auth.transport.requests"
        self.refreshes += 1
        self.token = f"access-token-{self.refreshes}"
        self.valid = True

    def expire(self) -> None:
        self.valid = False


@pytest.fixture
def credentials(monkeypatch: pytest.MonkeyPatch) -> Credentials:
    found = Credentials()
    asked: list[Any] = []

    def default(scopes: Any = None, **kwargs: Any) -> tuple[Credentials, str]:
        asked.append(scopes)
        if len(asked) > 1:
            raise AssertionError("Application Default Credentials looked up twice")
        assert scopes == [SCOPE]
        return found, "acme-prod"

    monkeypatch.setattr(google.auth, "default", default)
    return found


def test_credentials_are_looked_up_once_and_refreshed_only_when_expired(credentials):
    token = GoogleToken()
    assert token() == "access-token-1"
    assert token() == "access-token-1"
    assert credentials.refreshes == 1
    credentials.expire()
    assert token() == "access-token-2"
    assert credentials.refreshes == 2


def test_the_credentials_never_go_into_a_pickle(credentials):
    token = GoogleToken()
    token()
    restored = pickle.loads(pickle.dumps(token))  # noqa: S301 (bytes made just above)
    assert restored._credentials is None
    assert token._credentials is credentials, "pickling leaves the live token alone"


def test_google_api_is_a_rest_client_for_the_endpoint():
    client = google_api("https://run.googleapis.com/v2", token=lambda: "t", attempts=2)
    assert isinstance(client, RestClient)
    assert str(client.http.base_url) == "https://run.googleapis.com/v2/"
    assert client.attempts == 2
    assert client.token() == "t"
    assert isinstance(google_api("https://run.googleapis.com/v2").token, GoogleToken)
