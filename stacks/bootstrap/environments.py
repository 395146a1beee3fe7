"""The GitHub environments the workflows deploy and roll back through, and a check of their settings.

    python -m stacks.bootstrap.environments --repository OWNER/NAME

The bootstrap has no GitHub provider, so an administrator creates the environments by hand
(docs/deploy.md, GitHub environments); this reads them back through GitHub's REST API and names
every setting that differs. It needs only the standard library, and a token that may read the
repository's Actions settings (GITHUB_TOKEN with `actions: read` in a workflow).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

MAIN = "refs/heads/main"
# The reusable workflow every release runs in (deploy.yml calls it for staging, prod and the
# promotion), and the one every rollback runs in (dispatched by hand, or called by deploy.yml
# when a promotion is not approved). The deployer is admitted in an environment only for the
# workflow that environment belongs to.
RELEASE_WORKFLOW = ".github/workflows/release.yml"
ROLLBACK_WORKFLOW = ".github/workflows/rollback.yml"
# Release environments: the production one has required reviewers, who approve each prod release.
DEPLOY_ENVIRONMENTS = ("staging", "production")
PRODUCTION = "production"
# One rollback environment per release environment: no reviewer, so a rollback never waits for a
# person, and main only, so a branch or a pull request can never run in it.
ROLLBACK_SUFFIX = "-rollback"
ROLLBACK_ENVIRONMENTS = tuple(f"{e}{ROLLBACK_SUFFIX}" for e in DEPLOY_ENVIRONMENTS)
# Pull-request previews run in it (pr.yml), only once one of its reviewers approves the run.
PREVIEW_ENVIRONMENT = "preview"
API = "https://api.github.com"


@dataclass(frozen=True)
class Expected:
    """How one environment must be set: its reviewers, and the branches that may use it."""

    name: str
    reviewers: bool
    main_only: bool
    why: str


EXPECTED = (
    Expected("staging", reviewers=False, main_only=True, why="staging releases (release.yml)"),
    Expected(PRODUCTION, reviewers=True, main_only=True, why="each prod release and its promotion"),
    *(
        Expected(name, reviewers=False, main_only=True, why="rollbacks, which never wait for a person")
        for name in ROLLBACK_ENVIRONMENTS
    ),
    Expected(
        PREVIEW_ENVIRONMENT, reviewers=True, main_only=False, why="pull-request previews, approved per run"
    ),
)


def problems(expected: Expected, environment: Mapping[str, Any] | None, branches: Sequence[str]) -> list[str]:
    """What differs between an environment as GitHub reports it and as it must be.

    `environment` is the answer of GET /repos/{owner}/{repo}/environments/{name} (None when it does
    not exist) and `branches` the names of its custom deployment branch policies
    (https://docs.github.com/en/rest/deployments/environments#get-an-environment,
    https://docs.github.com/en/rest/deployments/branch-policies#list-deployment-branch-policies).
    """
    name = expected.name
    if environment is None:
        return [f"{name}: does not exist (or the token cannot read it); create it for {expected.why}"]
    found = []
    rules = {str(rule.get("type")): rule for rule in environment.get("protection_rules") or []}
    if expected.reviewers and "required_reviewers" not in rules:
        found.append(f"{name}: needs required reviewers, who approve {expected.why}")
    if not expected.reviewers and "required_reviewers" in rules:
        found.append(f"{name}: must have no required reviewers: it serves {expected.why}")
    if not expected.reviewers and int(rules.get("wait_timer", {}).get("wait_timer") or 0) > 0:
        found.append(f"{name}: must have no wait timer: it serves {expected.why}")
    if expected.main_only:
        policy = environment.get("deployment_branch_policy") or {}
        if not policy.get("custom_branch_policies") or list(branches) != ["main"]:
            found.append(
                f"{name}: deployment branches must be exactly `main` (selected branches), not"
                f" {_describe(policy, branches)}"
            )
    return found


def _describe(policy: Mapping[str, Any], branches: Sequence[str]) -> str:
    if not policy:
        return "every branch"
    if policy.get("protected_branches"):
        return "every protected branch"
    return f"{sorted(branches)}" if branches else "no branch"


Fetch = Callable[[str], Any]


def check(repository: str, fetch: Fetch) -> list[str]:
    """Every environment the workflows use, read through `fetch` (a GET of an API path: JSON, or
    None for 404), with what differs from docs/deploy.md."""
    found = []
    for expected in EXPECTED:
        path = f"/repos/{repository}/environments/{urllib.parse.quote(expected.name, safe='')}"
        environment = fetch(path)
        branches: list[str] = []
        policy = (environment or {}).get("deployment_branch_policy") or {}
        if policy.get("custom_branch_policies"):
            listed = fetch(f"{path}/deployment-branch-policies?per_page=100") or {}
            branches = [
                str(p.get("name"))
                for p in listed.get("branch_policies") or []
                if p.get("type", "branch") == "branch"
            ]
        found.extend(problems(expected, environment, branches))
    return found


def github_fetch(token: str, api: str = API) -> Fetch:
    """GETs from GitHub's REST API with the token; None for 404."""

    def fetch(path: str) -> Any:
        request = urllib.request.Request(  # noqa: S310 (a fixed https URL)
            api + path,
            headers={
                "Accept": "application/vnd.github+json",
                "Authorization": f"Bearer {token}",
                "X-GitHub-Api-Version": "2022-11-28",
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310
                return json.load(answer)
        except urllib.error.HTTPError as error:
            if error.code == 404:
                return None
            raise

    return fetch


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stacks.bootstrap.environments", description=__doc__)
    parser.add_argument("--repository", required=True, help="owner/name")
    args = parser.parse_args(argv)
    token = os.environ.get("GITHUB_TOKEN") or os.environ.get("GH_TOKEN")
    if not token:
        print(
            "error: set GITHUB_TOKEN (or GH_TOKEN) to a token that may read the repository", file=sys.stderr
        )
        return 2
    found = check(args.repository, github_fetch(token))
    for problem in found:
        print(f"::error::{problem}" if os.environ.get("GITHUB_ACTIONS") else f"  - {problem}")
    if not found:
        print(f"every environment is set as docs/deploy.md says: {', '.join(e.name for e in EXPECTED)}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
