"""Pruning abandoned secret versions, against a local double of the Cloud Run and Secret Manager APIs."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from components.rest import RestClient
from stacks.settings import WorkloadNames
from tests.http_double import Reply, Request, serve_json
from tools.prune_secrets import Target, Version, prunable, prune, target_of

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

    def __call__(self, request: Request) -> Reply:
        if request.method == "POST":
            name = request.path.removeprefix("/v1/").removesuffix(":destroy")
            self.destroyed.append(name)
            return Reply(200, {"name": name, "state": "DESTROYED"})
        if request.path == f"/v1/{PROJECT}/secrets":
            wanted = (request.param("filter") or "").removeprefix("name:")
            names = [{"name": f"{PROJECT}/secrets/{s}"} for s in self.secrets if s.startswith(wanted)]
            return Reply(200, {"secrets": names})
        if request.path.startswith(f"/v1/{PROJECT}/secrets/") and request.path.endswith("/versions"):
            return Reply(200, {"versions": self.secrets[request.path.split("/")[-2]]})
        pages = self.routes.get(request.path)
        if pages is None:
            return Reply(404, {"error": {"code": 404, "status": "NOT_FOUND"}})
        return Reply(200, pages[1 if request.param("pageToken") == "page-2" else 0])


@pytest.fixture
def double() -> Iterator[tuple[Double, str]]:
    state = Double()
    with serve_json(state) as served:
        yield state, served.url


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


def test_a_version_the_scaler_pins_stays(double):
    """The pool's scaler mounts DATABASE_URL too: a version only its revisions pin is in use."""
    state, url = double
    state.routes[f"{RUN}/services/liftoff-prod-scaler/revisions"] = [
        {"revisions": [{"containers": [{"env": [ref("liftoff-prod-database-url", "2")]}]}]}
    ]
    doomed = run_prune(url, apply=False)
    assert [(v.secret, v.number) for v in doomed] == [("liftoff-prod-openai-api-key", 1)]
