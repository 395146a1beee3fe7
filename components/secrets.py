"""Secrets: Secret Manager secrets and versions, readable only by the accounts that need them."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import pulumi
import pulumi_gcp as gcp

from components.propagation import GrantPropagation

SECRET_ID = re.compile(r"^[A-Za-z0-9_-]{1,255}$")


@dataclass(frozen=True)
class SecretSpec:
    """A secret's value and the keys of the accounts allowed to read it."""

    value: pulumi.Input[str]
    accessors: tuple[str, ...]


@dataclass(frozen=True)
class SecretsArgs:
    """Secrets by name (an environment variable's name, say), and the accounts by key."""

    prefix: str
    secrets: Mapping[str, SecretSpec]
    accounts: Mapping[str, pulumi.Input[str]]
    labels: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, spec in self.secrets.items():
            if not SECRET_ID.match(self.secret_id(name)):
                raise ValueError(f"secrets: {name!r} gives an invalid secret id")
            if not spec.accessors:
                raise ValueError(f"secrets[{name!r}].accessors: none, so nobody could read it")
            unknown = set(spec.accessors) - set(self.accounts)
            if unknown:
                raise ValueError(f"secrets[{name!r}].accessors: unknown accounts {sorted(unknown)}")

    def secret_id(self, name: str) -> str:
        return f"{self.prefix}-{name.lower().replace('_', '-')}"


@dataclass(frozen=True)
class SecretRef:
    """Where a workload reads a secret: the secret's id, the pinned version, and who may read it.

    `grants` are the accessor IAM members, and the wait for new ones to take effect: Cloud Run
    checks that a revision's (or a job's) service account can access every secret it mounts when
    it is created, so a workload depends on them.
    """

    secret: pulumi.Output[str]
    version: pulumi.Output[str]
    grants: tuple[pulumi.Resource, ...] = ()


class Secrets(pulumi.ComponentResource):
    """One secret per name, its current value as a version, and per-secret accessor IAM."""

    refs: dict[str, SecretRef]

    def __init__(self, name: str, args: SecretsArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("liftoff:index:Secrets", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        refs: dict[str, SecretRef] = {}
        made: list[pulumi.CustomResource] = []
        for secret_name, spec in sorted(args.secrets.items()):
            slug = args.secret_id(secret_name)
            secret = gcp.secretmanager.Secret(
                f"{name}-{slug}",
                gcp.secretmanager.SecretArgs(
                    secret_id=slug,
                    replication=gcp.secretmanager.SecretReplicationArgs(
                        auto=gcp.secretmanager.SecretReplicationAutoArgs()
                    ),
                    labels=dict(args.labels),
                ),
                opts=child,
            )
            # A new value replaces the version. The old one is abandoned, not destroyed: revisions
            # pinned to it (the stable one a rollback returns to, or any that scales from zero) must
            # still start. `make prune-secrets` destroys the versions no revision pins any more.
            version = gcp.secretmanager.SecretVersion(
                f"{name}-{slug}-version",
                gcp.secretmanager.SecretVersionArgs(
                    secret=secret.id,
                    secret_data=pulumi.Output.secret(spec.value),
                    deletion_policy="ABANDON",
                ),
                opts=child,
            )
            grants = tuple(
                gcp.secretmanager.SecretIamMember(
                    f"{name}-{slug}-{account}-accessor",
                    gcp.secretmanager.SecretIamMemberArgs(
                        secret_id=secret.secret_id,
                        role="roles/secretmanager.secretAccessor",
                        member=pulumi.Output.concat("serviceAccount:", args.accounts[account]),
                    ),
                    opts=child,
                )
                for account in sorted(spec.accessors)
            )
            made += grants
            refs[secret_name] = SecretRef(secret=secret.secret_id, version=version.version, grants=grants)
        settled = GrantPropagation(f"{name}-grant-propagation", made, opts=child)
        self.refs = {key: replace(ref, grants=(*ref.grants, settled)) for key, ref in refs.items()}
        self.register_outputs({name: ref.secret for name, ref in self.refs.items()})
