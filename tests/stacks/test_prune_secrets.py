"""Pruning abandoned secret versions, against a local double of the Cloud Run and Secret Manager APIs."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

from components.rest import RestClient
from stacks.prune_secrets import Target, Version, prunable, prune, target_of
from stacks.settings import WorkloadNames

pytestmark = pytest.mark.unit

PROJECT = "projects/p"
RUN = f"/v2/{PROJECT}/locations/europe-west1"
TARGET = Target("p", "europe-west1", WorkloadNames.of("prod"))


def ref(secret: str, version: str) -> dict[str, Any]:
    return {"name": "X", "valueSource": {"secretKeyRef": {"secret": secret, "version": version}}}


def secret_versions(secret: str, states: list[str]) -> list[dict[str, str]]:
    return [
        {"name": f"{PROJECT}/secrets/{secret}/versions/{n}", "state": state}
        for n, state in enumerate(states, 1)
    ]


class Double:
    """The two APIs' list, get and destroy calls, as their REST references describe them."""

    def __init__(self) -> None:
        self.destroyed: list[str] = []
        self.secrets = {
            "liftoff-prod-database-url": secret_versions(
                "liftoff-prod-database-url", ["ENABLED", "ENABLED", "ENABLED", "DESTROYED"]
            ),
            "liftoff-prod-openai-api-key": secret_versions(
                "liftoff-prod-openai-api-key", ["DISABLED", "ENABLED"]
            ),
            "liftoff-staging-database-url": secret_versions(
                "liftoff-staging-database-url", ["ENABLED", "ENABLED"]
            ),
        }
        # Two pages of API revisions: pins to version 1 and to projects/.../secrets/ID form of version 3.
        self.routes: dict[str, Any] = {
            f"{RUN}/services/liftoff-prod-api/revisions": [
                {
                    "revisions": [{"containers": [{"env": [ref("liftoff-prod-database-url", "1")]}]}],
                    "nextPageToken": "page-2",
                },
                {
                    "revisions": [
                        {"containers": [{"env": [ref(f"{PROJECT}/secrets/liftoff-prod-database-url", "3")]}]}
                    ]
                },
            ],
            f"{RUN}/workerPools/liftoff-prod-worker/revisions": [{"revisions": []}],
            f"{RUN}/jobs/liftoff-prod-migrate": [
                {
                    "template": {
                        "template": {"containers": [{"env": [ref("liftoff-prod-openai-api-key", "latest")]}]}
                    }
                }
            ],
        }


@pytest.fixture
def double() -> Iterator[tuple[Double, str]]:
    state = Double()

    class Handler(BaseHTTPRequestHandler):
        def _send(self, status: int, body: Any) -> None:
            payload = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
            url = urlparse(self.path)
            query = parse_qs(url.query)
            if url.path == f"/v1/{PROJECT}/secrets":
                wanted = query.get("filter", [""])[0].removeprefix("name:")
                names = [{"name": f"{PROJECT}/secrets/{s}"} for s in state.secrets if s.startswith(wanted)]
                return self._send(200, {"secrets": names})
            if url.path.startswith(f"/v1/{PROJECT}/secrets/") and url.path.endswith("/versions"):
                secret = url.path.split("/")[-2]
                return self._send(200, {"versions": state.secrets[secret]})
            pages = state.routes.get(url.path)
            if pages is None:
                return self._send(404, {"error": {"code": 404, "status": "NOT_FOUND"}})
            index = 1 if query.get("pageToken") == ["page-2"] else 0
            return self._send(200, pages[index])

        def do_POST(self) -> None:  # noqa: N802
            name = self.path.removeprefix("/v1/").removesuffix(":destroy")
            state.destroyed.append(name)
            self._send(200, {"name": name, "state": "DESTROYED"})

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield state, f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()


def run_prune(url: str, apply: bool) -> list[Version]:
    with RestClient(url, lambda: "t") as run, RestClient(url, lambda: "t") as secrets:
        return prune(TARGET, apply=apply, run=run, secrets=secrets)


def test_lists_only_unpinned_old_versions_of_this_stack(double):
    state, url = double
    doomed = run_prune(url, apply=False)
    assert [(v.secret, v.number) for v in doomed] == [
        ("liftoff-prod-database-url", 2),
        ("liftoff-prod-openai-api-key", 1),
    ]
    assert state.destroyed == [], "without --apply nothing changes"


def test_apply_destroys_exactly_those(double):
    state, url = double
    run_prune(url, apply=True)
    assert state.destroyed == [
        f"{PROJECT}/secrets/liftoff-prod-database-url/versions/2",
        f"{PROJECT}/secrets/liftoff-prod-openai-api-key/versions/1",
    ]


def test_the_newest_version_stays_even_when_nothing_pins_it():
    versions = [Version("s", 1, "ENABLED", "n1"), Version("s", 2, "ENABLED", "n2")]
    assert prunable(versions, set()) == [versions[0]]
    assert prunable(versions, {("s", "1")}) == []


def test_the_target_comes_from_the_stack_file():
    target = target_of("prod")
    assert (target.project, target.region, target.names.api) == (
        "liftoff-prod-000000",
        "europe-west1",
        "liftoff-prod-api",
    )
