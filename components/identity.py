"""ServiceAccounts: one identity per workload, with no project-wide roles unless asked."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import pulumi
import pulumi_gcp as gcp

ACCOUNT_ID = re.compile(r"^[a-z](?:[-a-z0-9]{4,28}[a-z0-9])$")
# Granting these to a workload would defeat least privilege.
PRIMITIVE_ROLES = frozenset({"roles/owner", "roles/editor", "roles/viewer"})


@dataclass(frozen=True)
class ServiceAccountsArgs:
    """Accounts by key (`api`, `worker`...), and any project roles each truly needs."""

    project: str
    prefix: str
    accounts: tuple[str, ...]
    project_roles: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for key in self.accounts:
            if not ACCOUNT_ID.match(self.account_id(key)):
                raise ValueError(
                    f"accounts: account id {self.account_id(key)!r} is not valid (6-30 chars, a-z0-9-)"
                )
        for key, roles in self.project_roles.items():
            if key not in self.accounts:
                raise ValueError(f"project_roles: roles for unknown account {key!r}")
            primitive = PRIMITIVE_ROLES.intersection(roles)
            if primitive:
                raise ValueError(
                    f"project_roles: account {key!r} must not get primitive roles {sorted(primitive)}"
                )

    def account_id(self, key: str) -> str:
        return f"{self.prefix}-{key}"


class ServiceAccounts(pulumi.ComponentResource):
    """A service account per workload; `emails` maps each key to its address."""

    emails: dict[str, pulumi.Output[str]]

    def __init__(
        self, name: str, args: ServiceAccountsArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("liftoff:index:ServiceAccounts", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.emails = {}
        for key in args.accounts:
            account = gcp.serviceaccount.Account(
                f"{name}-{key}",
                gcp.serviceaccount.AccountArgs(
                    account_id=args.account_id(key),
                    display_name=f"Liftoff {key}",
                    description=f"Runs the Liftoff {key} workload.",
                    project=args.project,
                ),
                opts=child,
            )
            self.emails[key] = account.email
            for role in args.project_roles.get(key, ()):
                gcp.projects.IAMMember(
                    f"{name}-{key}-{role.rsplit('/', 1)[-1]}",
                    gcp.projects.IAMMemberArgs(
                        project=args.project,
                        role=role,
                        member=pulumi.Output.concat("serviceAccount:", account.email),
                    ),
                    opts=child,
                )
        self.register_outputs(dict(self.emails))
