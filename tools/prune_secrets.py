"""Destroy the secret versions that no Cloud Run revision or job can use any more.

    python tools/prune_secrets.py --stack prod            # what would go, changes nothing
    python tools/prune_secrets.py --stack prod --apply    # destroy them

A rotation abandons the old version instead of destroying it (components/secrets.py), because a
revision that a rollback returns to, or that scales up, reads the version it pins. A version is
kept while any existing revision of the API service or the worker pool, or either job, pins it,
and the newest version of each secret is always kept. Delete old revisions (`gcloud run
revisions delete`) to let their versions go. Needs the deployer's Application Default
Credentials, like `pulumi up`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Run as a script (make prune-secrets), the project root must be importable.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from components.googleapi import google_api  # noqa: E402
from components.rest import ApiError, NotFoundError, RestClient  # noqa: E402
from stacks.settings import WorkloadNames  # noqa: E402
from tools.render import ROOT, stack_config  # noqa: E402

RUN_API = "https://run.googleapis.com"
SECRETS_API = "https://secretmanager.googleapis.com"
LIVE = ("ENABLED", "DISABLED")


@dataclass(frozen=True, order=True)
class Version:
    """One secret version: its secret's id, its number, its state."""

    secret: str
    number: int
    state: str
    name: str


@dataclass(frozen=True)
class Target:
    """Where one stack lives, and the names of what it deploys."""

    project: str
    region: str
    names: WorkloadNames

    @property
    def prefix(self) -> str:
        return self.names.prefix


def prunable(versions: Iterable[Version], pinned: set[tuple[str, str]]) -> list[Version]:
    """The live versions that no revision or job pins and that are not their secret's newest."""
    by_secret: dict[str, list[Version]] = {}
    for version in versions:
        if version.state in LIVE:
            by_secret.setdefault(version.secret, []).append(version)
    doomed = []
    for secret, found in by_secret.items():
        newest = max(v.number for v in found)
        for version in found:
            used = (secret, str(version.number)) in pinned or (
                version.number == newest and (secret, "latest") in pinned
            )
            if version.number != newest and not used:
                doomed.append(version)
    return sorted(doomed)


def pins(containers: Iterable[Mapping[str, Any]]) -> set[tuple[str, str]]:
    """(secret id, version) of every secret reference in some containers' environments."""
    found = set()
    for container in containers:
        for env in container.get("env") or []:
            ref = (env.get("valueSource") or {}).get("secretKeyRef")
            if ref:
                secret = str(ref["secret"]).rsplit("/", 1)[-1]
                found.add((secret, str(ref.get("version") or "latest")))
    return found


def pinned_versions(run: RestClient, target: Target) -> set[tuple[str, str]]:
    """Every version any revision of the API, the pool or the pool's scaler, or either job's
    template, pins. A stack with a fixed pool has no scaler."""
    parent = f"/v2/projects/{target.project}/locations/{target.region}"
    found: set[tuple[str, str]] = set()
    for kind, name in (("services", target.names.api), ("workerPools", target.names.worker)):
        for revision in run.pages(f"{parent}/{kind}/{name}/revisions", "revisions"):
            found |= pins(revision.get("containers") or [])
    try:
        for revision in run.pages(f"{parent}/services/{target.names.scaler}/revisions", "revisions"):
            found |= pins(revision.get("containers") or [])
    except NotFoundError:
        pass
    for job in (target.names.migrations, target.names.retention):
        try:
            body = run.call("GET", f"{parent}/jobs/{job}") or {}
        except NotFoundError:
            continue
        found |= pins(((body.get("template") or {}).get("template") or {}).get("containers") or [])
    return found


def secret_versions(secrets: RestClient, target: Target) -> list[Version]:
    """The versions of this stack's secrets (their ids start with the stack's prefix)."""
    project = f"/v1/projects/{target.project}"
    listed = secrets.pages(f"{project}/secrets", "secrets", params={"filter": f"name:{target.prefix}-"})
    found = []
    for secret in listed:
        secret_id = str(secret["name"]).rsplit("/", 1)[-1]
        if not secret_id.startswith(f"{target.prefix}-"):
            continue
        for version in secrets.pages(f"/v1/{secret['name']}/versions", "versions"):
            number = str(version["name"]).rsplit("/", 1)[-1]
            found.append(Version(secret_id, int(number), str(version.get("state")), str(version["name"])))
    return found


def prune(target: Target, *, apply: bool, run: RestClient, secrets: RestClient) -> list[Version]:
    """Find the prunable versions and, with `apply`, destroy them; returns them."""
    doomed = prunable(secret_versions(secrets, target), pinned_versions(run, target))
    if apply:
        for version in doomed:
            secrets.call("POST", f"/v1/{version.name}:destroy", json={})
    return doomed


def target_of(stack: str, root: Path = ROOT) -> Target:
    """The stack's project, region and resource prefix, from its committed stack file."""
    config = stack_config(stack, root)
    environment = str(config.get("liftoff:environment") or stack)
    return Target(str(config["gcp:project"]), str(config["gcp:region"]), WorkloadNames.of(environment))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tools/prune_secrets.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--stack", required=True, choices=["staging", "prod"])
    parser.add_argument("--apply", action="store_true", help="destroy them (default: only list them)")
    args = parser.parse_args(argv)
    target = target_of(args.stack)
    with google_api(RUN_API) as run, google_api(SECRETS_API) as secrets:
        try:
            doomed = prune(target, apply=args.apply, run=run, secrets=secrets)
        except ApiError as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
    verb = "destroyed" if args.apply else "would destroy (run again with --apply)"
    for version in doomed:
        print(f"{verb}: {version.secret} version {version.number} ({version.state.lower()})")
    if not doomed:
        print(f"nothing to prune in {target.project}: every live version is pinned or the newest")
    return 0


if __name__ == "__main__":
    sys.exit(main())
