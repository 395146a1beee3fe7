"""ContainerImage: an Artifact Registry repository and the app image, pushed, referenced by digest."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pulumi
import pulumi_docker_build as docker_build
import pulumi_gcp as gcp

from components.rules import ImageTag, check

# Build leftovers that never belong to an image's inputs.
IGNORED = ("__pycache__", ".pyc", ".pyo")
# A repository id is unique in its project and location: lowercase letters, digits and hyphens,
# starting with a letter, not ending with a hyphen, at most 63 characters
# (https://cloud.google.com/artifact-registry/docs/repositories/create-repos, "Repository names").
REPOSITORY_ID = re.compile(r"^[a-z](?:[a-z0-9-]{0,61}[a-z0-9])?$")


def source_files(root: Path, sources: Iterable[str]) -> list[Path]:
    """The files under `sources` (paths relative to `root`), sorted, without build leftovers."""
    found: list[Path] = []
    for source in sources:
        path = root / source
        candidates = path.rglob("*") if path.is_dir() else [path]
        found += [
            p for p in candidates if p.is_file() and not any(part.endswith(IGNORED) for part in p.parts)
        ]
    return sorted(found)


def source_hash(root: Path, sources: Iterable[str]) -> str:
    """A digest of the image's inputs: their paths and contents, nothing else (no mtimes)."""
    digest = hashlib.sha256()
    for file in source_files(root, sources):
        digest.update(str(file.relative_to(root)).encode() + b"\0")
        digest.update(file.read_bytes() + b"\0")
    return digest.hexdigest()


def source_tag(root: Path, sources: Iterable[str]) -> str:
    """`src-<hash>`: the same sources give the same tag, so an unchanged tree builds nothing."""
    return f"src-{source_hash(root, sources)[:16]}"


@dataclass(frozen=True)
class ContainerImageArgs:
    """Build `dockerfile` in `context` for linux/amd64 and push it as `image_name:tag`.

    `tag` should follow the sources (see `source_tag`): the provider rebuilds when the context
    or the arguments change, so a per-commit tag would rebuild and push on every update.
    """

    project: str
    region: str
    repository_id: str
    image_name: str
    context: str
    dockerfile: str
    tag: str
    # Old images kept: enough to roll back to any revision that might still take traffic.
    keep_recent: int = 30
    labels: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check(self, tag=ImageTag)
        if not REPOSITORY_ID.match(self.repository_id):
            raise ValueError(
                f"repository_id: {self.repository_id!r} is not a repository id"
                " (a-z0-9-, starting with a letter, at most 63 characters)"
            )
        if self.keep_recent < 5:
            raise ValueError("keep_recent must be at least 5, or rollbacks lose their images")

    @property
    def host(self) -> str:
        return f"{self.region}-docker.pkg.dev"


class ContainerImage(pulumi.ComponentResource):
    """`ref` is `repository/image@sha256:...`: workloads never run a mutable tag."""

    digest: pulumi.Output[str]
    ref: pulumi.Output[str]

    def __init__(
        self, name: str, args: ContainerImageArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("liftoff:index:ContainerImage", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        repository = gcp.artifactregistry.Repository(
            f"{name}-repository",
            gcp.artifactregistry.RepositoryArgs(
                project=args.project,
                location=args.region,
                repository_id=args.repository_id,
                format="DOCKER",
                description="Liftoff application images.",
                labels=dict(args.labels),
                cleanup_policy_dry_run=False,
                cleanup_policies=[
                    gcp.artifactregistry.RepositoryCleanupPolicyArgs(
                        id="keep-recent",
                        action="KEEP",
                        most_recent_versions=gcp.artifactregistry.RepositoryCleanupPolicyMostRecentVersionsArgs(
                            keep_count=args.keep_recent
                        ),
                    ),
                    gcp.artifactregistry.RepositoryCleanupPolicyArgs(
                        id="delete-untagged",
                        action="DELETE",
                        condition=gcp.artifactregistry.RepositoryCleanupPolicyConditionArgs(
                            tag_state="UNTAGGED", older_than="2592000s"
                        ),
                    ),
                ],
            ),
            opts=child,
        )
        path = pulumi.Output.concat(
            args.host, "/", args.project, "/", repository.repository_id, "/", args.image_name
        )
        token = gcp.organizations.get_client_config_output().access_token
        image = docker_build.Image(
            f"{name}-image",
            docker_build.ImageArgs(
                context=docker_build.BuildContextArgs(location=args.context),
                dockerfile=docker_build.DockerfileArgs(location=args.dockerfile),
                platforms=[docker_build.Platform.LINUX_AMD64],
                # Fixed image timestamps, so the configuration and history do not vary by build time.
                build_args={"SOURCE_DATE_EPOCH": "0"},
                push=True,
                tags=[pulumi.Output.concat(path, ":", args.tag)],
                registries=[
                    docker_build.RegistryArgs(
                        address=args.host, username="oauth2accesstoken", password=pulumi.Output.secret(token)
                    )
                ],
            ),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[repository]),
        )
        self.digest = image.digest
        self.ref = pulumi.Output.concat(path, "@", image.digest)
        self.register_outputs({"digest": self.digest, "ref": self.ref})
