"""RestClient against a local HTTP server that answers from a script: what is retried, and how long."""

from __future__ import annotations

import email.utils
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import pytest

from components.rest import ApiError, NotFoundError, RestClient, retry_after_seconds
from tests.http_double import Reply, Request, serve_json

pytestmark = pytest.mark.unit

# Closes the connection without answering, as a proxy or a crashing server does.
DROP = Reply(0, drop=True)


@dataclass
class Scripted:
    """Answers requests in order (the last answer repeats) and keeps what it was asked."""

    url: str = ""
    script: list[Reply] = field(default_factory=list)
    seen: list[tuple[str, str, str, Any]] = field(default_factory=list)

    def next(self) -> Reply:
        return self.script.pop(0) if len(self.script) > 1 else self.script[0]

    def __call__(self, request: Request) -> Reply:
        self.seen.append(
            (request.method, request.target, request.headers.get("authorization", ""), request.body)
        )
        reply = self.next()
        # No body is an empty one here, not JSON's null.
        return reply if reply.body is not None else replace(reply, body="")


@pytest.fixture
def server() -> Iterator[Scripted]:
    state = Scripted(script=[Reply(200, {"ok": True})])
    with serve_json(state) as served:
        state.url = f"{served.url}/v2/"
        yield state


@dataclass
class Client:
    api: RestClient
    slept: list[float]
    tokens: list[str]


def client(server: Scripted, **options: Any) -> Client:
    slept: list[float] = []
    tokens: list[str] = []

    def token() -> str:
        tokens.append(f"token-{len(tokens) + 1}")
        return tokens[-1]

    return Client(RestClient(server.url, token, sleep=slept.append, **options), slept, tokens)


def test_calls_are_json_with_a_fresh_bearer_token_each_time(server):
    c = client(server)
    assert c.api.call("POST", "jobs/x:run", json={"a": 1}, params={"q": "v"}) == {"ok": True}
    assert c.api.call("GET", "jobs/x") == {"ok": True}
    assert server.seen == [
        ("POST", "/v2/jobs/x:run?q=v", "Bearer token-1", {"a": 1}),
        ("GET", "/v2/jobs/x", "Bearer token-2", None),
    ]


def test_an_empty_answer_is_none(server):
    server.script = [Reply(204)]
    assert client(server).api.call("DELETE", "jobs/x") is None


def test_a_404_is_not_found_and_not_retried(server):
    server.script = [Reply(404, {"error": "gone"})]
    with pytest.raises(NotFoundError, match="404") as caught:
        client(server).api.call("GET", "jobs/x")
    assert caught.value.status == 404
    assert len(server.seen) == 1


def test_throttling_waits_as_retry_after_says(server):
    server.script = [Reply(429, headers={"Retry-After": "7"}), Reply(200, {"ok": 1})]
    c = client(server)
    assert c.api.call("POST", "jobs/x:run") == {"ok": 1}
    assert c.slept == [7.0]
    assert len(server.seen) == 2


def test_a_get_that_fails_backs_off_exponentially_up_to_the_cap(server):
    server.script = [Reply(500), Reply(502), Reply(503), Reply(500), Reply(200, {"ok": 1})]
    c = client(server, max_backoff_seconds=5)
    assert c.api.call("GET", "jobs/x") == {"ok": 1}
    assert c.slept == [1.0, 2.0, 4.0, 5.0]


def test_a_post_that_may_have_started_something_is_not_repeated(server):
    server.script = [Reply(500, {"error": "internal"})]
    with pytest.raises(ApiError, match="500") as caught:
        client(server).api.call("POST", "jobs/x:run")
    assert caught.value.status == 500
    assert len(server.seen) == 1


def test_a_post_answered_503_did_nothing_and_is_repeated(server):
    server.script = [Reply(503), Reply(200, {"ok": 1})]
    assert client(server).api.call("POST", "jobs/x:run") == {"ok": 1}
    assert len(server.seen) == 2


def test_a_dropped_connection_is_repeated_for_a_get_but_not_for_a_post(server):
    server.script = [DROP, Reply(200, {"ok": 1})]
    assert client(server).api.call("GET", "jobs/x") == {"ok": 1}
    server.script = [DROP]
    with pytest.raises(ApiError, match="POST jobs/x:run") as caught:
        client(server).api.call("POST", "jobs/x:run")
    assert caught.value.status is None


def test_a_refused_connection_never_reached_the_server_so_a_post_is_repeated():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    slept: list[float] = []
    api = RestClient(f"http://127.0.0.1:{port}", lambda: "t", attempts=3, sleep=slept.append)
    with pytest.raises(ApiError, match="ConnectError"):
        api.call("POST", "jobs/x:run")
    assert slept == [1.0, 2.0]


def test_it_gives_up_after_its_attempts_with_the_last_status(server):
    server.script = [Reply(500, {"error": "still down"})]
    c = client(server, attempts=3)
    with pytest.raises(ApiError, match="still down") as caught:
        c.api.call("GET", "jobs/x")
    assert caught.value.status == 500
    assert len(server.seen) == 3
    assert c.slept == [1.0, 2.0]


def test_pages_follow_the_next_page_token(server):
    server.script = [
        Reply(200, {"items": [1, 2], "nextPageToken": "p2"}),
        Reply(200, {"items": [3], "nextPageToken": "p3"}),
        Reply(200, {}),
    ]
    assert client(server).api.pages("secrets", "items", params={"filter": "x"}) == [1, 2, 3]
    assert [path for _, path, _, _ in server.seen] == [
        "/v2/secrets?filter=x",
        "/v2/secrets?filter=x&pageToken=p2",
        "/v2/secrets?filter=x&pageToken=p3",
    ]


def test_retry_after_reads_both_forms():
    assert retry_after_seconds("120") == 120.0
    assert retry_after_seconds(None) is None
    assert retry_after_seconds("soon") is None
    later = email.utils.formatdate(time.time() + 30, usegmt=True)
    wait = retry_after_seconds(later)
    assert wait is not None and 28 <= wait <= 31


def test_a_retry_after_in_the_past_waits_nothing(server):
    past = email.utils.formatdate(time.time() - 60, usegmt=True)
    server.script = [Reply(429, headers={"Retry-After": past}), Reply(200, {"ok": 1})]
    c = client(server)
    c.api.call("GET", "jobs/x")
    assert c.slept == [0.0]
