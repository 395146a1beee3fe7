"""SupabaseDatabase: a Supabase project (created or adopted) and the DSNs the app needs."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

import pulumi
import pulumi_random as random

from components.rules import SupabaseRegion, check
from components.supabase_api import REGIONS, ProjectInputs, SupabaseProject, SupabaseProjectProvider

__all__ = ["REGIONS", "SupabaseDatabase", "SupabaseDatabaseArgs"]


@dataclass(frozen=True)
class SupabaseDatabaseArgs:
    """Create a project in the organization `organization_id` (its slug), or adopt `project_ref`."""

    name: str
    region: str
    organization_id: str | None = None
    project_ref: str | None = None
    # Adopting: the project's database password (a secret). Creating: generated here.
    db_password: pulumi.Input[str] | None = None
    jwt_secret: pulumi.Input[str] | None = None
    # Both the engine's `protect` and the provider's refusal to delete (SupabaseProjectProvider.delete).
    protect: bool = True
    # Where the Management API answers; tests point it at a local double.
    api_url: str | None = None

    def __post_init__(self) -> None:
        if (self.organization_id is None) == (self.project_ref is None):
            raise ValueError("give exactly one of organization_id (create) or project_ref (adopt)")
        check(self, region=SupabaseRegion)
        if self.project_ref is not None and self.db_password is None:
            raise ValueError("adopting a project needs its db_password")


class SupabaseDatabase(pulumi.ComponentResource):
    """Postgres on Supabase, reached through Supavisor."""

    project_ref: pulumi.Output[str]
    transaction_dsn: pulumi.Output[str]
    session_dsn: pulumi.Output[str]
    jwks_url: pulumi.Output[str]
    jwt_secret: pulumi.Output[str] | None

    def __init__(
        self, name: str, args: SupabaseDatabaseArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("liftoff:index:SupabaseDatabase", name, None, opts)
        password = self._password(name, args)
        project = self._project(name, args, password)
        self.project_ref = project.ref
        self.transaction_dsn = _pooler_dsn(project, password, project.pooler_transaction_port)
        self.session_dsn = _pooler_dsn(project, password, project.pooler_session_port)
        self.jwks_url = self.project_ref.apply(
            lambda ref: f"https://{ref}.supabase.co/auth/v1/.well-known/jwks.json"
        )
        self.jwt_secret = pulumi.Output.secret(args.jwt_secret) if args.jwt_secret is not None else None
        self.register_outputs(
            {
                "project_ref": self.project_ref,
                "transaction_dsn": self.transaction_dsn,
                "session_dsn": self.session_dsn,
                "jwks_url": self.jwks_url,
            }
        )

    def _password(self, name: str, args: SupabaseDatabaseArgs) -> pulumi.Output[str]:
        """A generated password for a created project; an adopted one's is its owner's."""
        if args.organization_id is not None:
            generated = random.RandomPassword(
                f"{name}-db-password",
                random.RandomPasswordArgs(length=32, special=False),
                opts=pulumi.ResourceOptions(parent=self),
            )
            return generated.result
        if args.db_password is not None:
            return pulumi.Output.secret(args.db_password)
        raise ValueError("adopting a project needs its db_password")  # __post_init__ makes this unreachable

    def _project(
        self, name: str, args: SupabaseDatabaseArgs, password: pulumi.Output[str]
    ) -> SupabaseProject:
        return SupabaseProject(
            f"{name}-project",
            ProjectInputs(
                name=args.name,
                region=args.region,
                organization_slug=args.organization_id,
                project_ref=args.project_ref,
                # An adopted project's password is its owner's: the provider never changes it.
                db_pass=password if args.organization_id is not None else None,
                deletion_protection=args.protect,
            ),
            opts=pulumi.ResourceOptions(parent=self, protect=args.protect),
            provider=SupabaseProjectProvider(args.api_url) if args.api_url else None,
        )


def _pooler_dsn(
    project: SupabaseProject, password: pulumi.Output[str], port: pulumi.Output[int]
) -> pulumi.Output[str]:
    """A DSN through the project's own Supavisor pooler: new projects land on pooler clusters whose
    host, user and ports cannot be derived from the region."""
    parts = pulumi.Output.all(
        project.pooler_user, password, project.pooler_host, port, project.pooler_database
    )
    return pulumi.Output.secret(
        parts.apply(
            lambda v: f"postgresql://{v[0]}:{quote(v[1], safe='')}@{v[2]}:{int(v[3])}/{v[4]}?sslmode=require"
        )
    )
