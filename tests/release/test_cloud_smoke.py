"""The candidate's smoke test: /ready on its tag URL, retried, with an ID token when private."""

from __future__ import annotations

import pytest

from release.cloud import ID_TOKEN_ENV, HttpSmoke, Tagged
from stacks.ledger import Release
from tests.http_double import Reply, Request

pytestmark = pytest.mark.unit

CANDIDATE = Release("liftoff-prod-api-b", "liftoff-prod-worker-b")
AUDIENCE = "liftoff-prod-api"


def app(not_ready_for: int, status: int = 503):
    """/ready answering `status` for its first requests, then 200, as a revision warming up."""
    seen: list[Request] = []

    def handle(request: Request) -> Reply:
        seen.append(request)
        if request.path != "/ready":
            return Reply(404, {"detail": "Not Found"})
        if len(seen) <= not_ready_for:
            return Reply(status, {"status": "starting"})
        return Reply(200, {"status": "ready"})

    return handle


def no_token(audience: str) -> str:
    raise AssertionError("no token should be fetched")


def smoke(
    url: str,
    *,
    private: bool = True,
    fetch_token=no_token,
    deadline: float = 5.0,
    revision="liftoff-prod-api-b",
):
    return HttpSmoke(
        lambda: Tagged(revision, url),
        audience=AUDIENCE,
        private=private,
        fetch_token=fetch_token,
        deadline_seconds=deadline,
        interval_seconds=0.05,
        timeout_seconds=2.0,
    )


def test_retries_until_the_candidate_is_ready_with_the_token_from_the_environment(serve, monkeypatch):
    monkeypatch.setenv(ID_TOKEN_ENV, "id-token-from-ci")
    served = serve(app(not_ready_for=3))
    assert smoke(served.url).check(CANDIDATE) is None
    assert len(served.requests) == 4
    assert {r.path for r in served.requests} == {"/ready"}
    assert {r.headers.get("authorization") for r in served.requests} == {"Bearer id-token-from-ci"}


def test_without_the_variable_a_token_is_fetched_for_the_service_audience(serve, monkeypatch):
    monkeypatch.delenv(ID_TOKEN_ENV, raising=False)
    audiences: list[str] = []

    def fetch(audience: str) -> str:
        audiences.append(audience)
        return "fetched-id-token"

    served = serve(app(not_ready_for=0))
    assert smoke(served.url, fetch_token=fetch).check(CANDIDATE) is None
    assert audiences == [AUDIENCE]
    assert served.requests[0].headers.get("authorization") == "Bearer fetched-id-token"


def test_a_public_api_gets_no_token(serve, monkeypatch):
    monkeypatch.setenv(ID_TOKEN_ENV, "id-token-from-ci")
    served = serve(app(not_ready_for=0))
    assert smoke(served.url, private=False).check(CANDIDATE) is None
    assert "authorization" not in served.requests[0].headers


def test_a_candidate_never_ready_fails_with_what_it_answered(serve, monkeypatch):
    monkeypatch.setenv(ID_TOKEN_ENV, "t")
    served = serve(app(not_ready_for=10_000, status=503))
    failure = smoke(served.url, deadline=0.4).check(CANDIDATE)
    assert failure is not None
    assert failure.startswith(f"GET {served.url}/ready: 503")
    assert "starting" in failure
    assert len(served.requests) >= 2, "it was retried"


def test_an_unreachable_candidate_fails_with_the_connection_error(monkeypatch):
    monkeypatch.setenv(ID_TOKEN_ENV, "t")
    from app.local.servers import free_port

    failure = smoke(f"http://127.0.0.1:{free_port()}", deadline=0.2).check(CANDIDATE)
    assert failure is not None and "ConnectError" in failure


def test_a_tag_on_another_revision_is_not_smoke_tested(serve):
    served = serve(app(not_ready_for=0))
    failure = smoke(served.url, revision="liftoff-prod-api-a").check(CANDIDATE)
    assert failure == "the 'candidate' tag routes to liftoff-prod-api-a, not to liftoff-prod-api-b"
    assert served.requests == []


def test_no_candidate_tag_fails():
    check = HttpSmoke(lambda: None, audience=AUDIENCE, private=True, fetch_token=no_token)
    assert check.check(CANDIDATE) == "the service has no 'candidate' tag to smoke-test"


def test_no_credentials_fails_and_says_how_to_pass_a_token(serve, monkeypatch):
    monkeypatch.delenv(ID_TOKEN_ENV, raising=False)

    def refuse(audience: str) -> str:
        raise RuntimeError("no credentials that can mint ID tokens")

    served = serve(app(not_ready_for=0))
    failure = smoke(served.url, fetch_token=refuse).check(CANDIDATE)
    assert failure is not None
    assert "no credentials that can mint ID tokens" in failure and ID_TOKEN_ENV in failure
    assert served.requests == []
