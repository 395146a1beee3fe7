"""The check of the GitHub environments, against a local double of GitHub's REST API."""

from __future__ import annotations

from typing import Any

import pytest

from stacks.bootstrap.environments import EXPECTED, ROLLBACK_ENVIRONMENTS, check, github_fetch
from tests.http_double import Reply, Request, serve_json

pytestmark = pytest.mark.unit

REPOSITORY = "your-org/liftoff"
TOKEN = "ghs_test"
MAIN_ONLY = {"protected_branches": False, "custom_branch_policies": True}
REVIEWERS = {
    "id": 3755,
    "node_id": "MDQ6R2F0ZTM3NTU=",
    "type": "required_reviewers",
    "prevent_self_review": False,
    "reviewers": [{"type": "Team", "reviewer": {"id": 1, "slug": "deployers"}}],
}


def environment(name: str, rules: list[dict[str, Any]], policy: dict[str, bool] | None) -> dict[str, Any]:
    """An environment as GET /repos/{owner}/{repo}/environments/{name} answers
    (https://docs.github.com/en/rest/deployments/environments#get-an-environment)."""
    return {
        "id": 161088068,
        "node_id": "MDExOkVudmlyb25tZW50MTYxMDg4MDY4",
        "name": name,
        "url": f"https://api.github.com/repos/{REPOSITORY}/environments/{name}",
        "html_url": f"https://github.com/{REPOSITORY}/deployments/activity_log?environments_filter={name}",
        "created_at": "2020-11-23T22:00:40Z",
        "updated_at": "2020-11-23T22:00:40Z",
        "can_admins_bypass": True,
        "protection_rules": [
            *rules,
            *([{"id": 3515, "node_id": "MDQ", "type": "branch_policy"}] if policy else []),
        ],
        "deployment_branch_policy": policy,
    }


def as_documented() -> dict[str, dict[str, Any]]:
    """Every environment set as docs/deploy.md says."""
    return {
        "staging": environment("staging", [], MAIN_ONLY),
        "production": environment("production", [REVIEWERS], MAIN_ONLY),
        **{name: environment(name, [], MAIN_ONLY) for name in ROLLBACK_ENVIRONMENTS},
        "preview": environment("preview", [REVIEWERS], None),
    }


def github(environments: dict[str, dict[str, Any]], branches: dict[str, list[str]] | None = None):
    """GitHub's answers: the environments, their branch policies (main unless told), 404 otherwise."""

    def answer(request: Request) -> Reply:
        assert request.headers["authorization"] == f"Bearer {TOKEN}"
        prefix = f"/repos/{REPOSITORY}/environments/"
        name, _, rest = request.path.removeprefix(prefix).partition("/")
        if not request.path.startswith(prefix) or name not in environments:
            return Reply(404, {"message": "Not Found", "documentation_url": "https://docs.github.com/rest"})
        if rest == "deployment-branch-policies":
            names = (branches or {}).get(name, ["main"])
            policies = [
                {"id": 361471 + i, "node_id": "MDE2", "name": n, "type": "branch"}
                for i, n in enumerate(names)
            ]
            return Reply(200, {"total_count": len(policies), "branch_policies": policies})
        return Reply(200, environments[name])

    return answer


def run_check(
    environments: dict[str, dict[str, Any]], branches: dict[str, list[str]] | None = None
) -> list[str]:
    with serve_json(github(environments, branches)) as served:
        return check(REPOSITORY, github_fetch(TOKEN, api=served.url))


def test_environments_set_as_documented_pass():
    assert run_check(as_documented()) == []
    assert {e.name for e in EXPECTED} == {"staging", "production", "preview", *ROLLBACK_ENVIRONMENTS}


def test_a_rollback_environment_with_reviewers_or_a_wait_is_named():
    environments = as_documented()
    environments["production-rollback"] = environment(
        "production-rollback",
        [REVIEWERS, {"id": 1, "node_id": "x", "type": "wait_timer", "wait_timer": 30}],
        MAIN_ONLY,
    )
    why = "it serves rollbacks, which never wait for a person"
    assert run_check(environments) == [
        f"production-rollback: must have no required reviewers: {why}",
        f"production-rollback: must have no wait timer: {why}",
    ]


def test_production_without_reviewers_is_named():
    environments = as_documented()
    environments["production"] = environment("production", [], MAIN_ONLY)
    assert run_check(environments) == [
        "production: needs required reviewers, who approve each prod release and its promotion"
    ]


@pytest.mark.parametrize(
    ("policy", "branches", "said"),
    [
        (None, None, "every branch"),
        ({"protected_branches": True, "custom_branch_policies": False}, None, "every protected branch"),
        (MAIN_ONLY, ["main", "release/*"], "['main', 'release/*']"),
    ],
)
def test_a_rollback_environment_open_to_other_branches_is_named(policy, branches, said):
    environments = as_documented()
    environments["staging-rollback"] = environment("staging-rollback", [], policy)
    assert run_check(environments, {"staging-rollback": branches} if branches else None) == [
        f"staging-rollback: deployment branches must be exactly `main` (selected branches), not {said}"
    ]


def test_a_missing_environment_is_named():
    environments = as_documented()
    del environments["staging-rollback"]
    (problem,) = run_check(environments)
    assert problem.startswith("staging-rollback: does not exist")


def test_the_check_needs_a_token(monkeypatch, capsys):
    from stacks.bootstrap.environments import main

    monkeypatch.delenv("GITHUB_TOKEN", raising=False)
    monkeypatch.delenv("GH_TOKEN", raising=False)
    assert main(["--repository", REPOSITORY]) == 2
    assert "set GITHUB_TOKEN" in capsys.readouterr().err
