"""SupabaseDatabase: a Supabase project (created or adopted) and the DSNs the app needs."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

import pulumi
import pulumi_random as random
import pulumi_supabase as supabase

# pulumi_supabase is unmaintained (last release 2022) and its pooling outputs predate
# Supavisor, so the pooler DSNs are built here from the project ref and region.
REGIONS = frozenset(r.value for r in supabase.Region)
PLANS = frozenset(p.value for p in supabase.Plan)
TRANSACTION_PORT = 6543
SESSION_PORT = 5432


@dataclass(frozen=True)
class SupabaseDatabaseArgs:
    """Create a project in `organization_id`, or adopt the existing `project_ref`."""

    name: str
    region: str
    organization_id: str | None = None
    plan: str = "pro"
    project_ref: str | None = None
    # Adopting: the project's database password (a secret). Creating: generated here.
    db_password: pulumi.Input[str] | None = None
    # Supavisor hosts moved between clusters (aws-0-, aws-1-...); a stack can name its own.
    pooler_host: str | None = None
    jwt_secret: pulumi.Input[str] | None = None
    protect: bool = True

    def __post_init__(self) -> None:
        if (self.organization_id is None) == (self.project_ref is None):
            raise ValueError("give exactly one of organization_id (create) or project_ref (adopt)")
        if self.region not in REGIONS:
            raise ValueError(f"region {self.region!r} is not a Supabase region: {sorted(REGIONS)}")
        if self.plan not in PLANS:
            raise ValueError(f"plan {self.plan!r} is not one of {sorted(PLANS)}")
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
        child = pulumi.ResourceOptions(parent=self)
        password: pulumi.Output[str]
        if args.organization_id is not None:
            generated = random.RandomPassword(
                f"{name}-db-password", random.RandomPasswordArgs(length=32, special=False), opts=child
            )
            password = generated.result
            project = supabase.Project(
                f"{name}-project",
                supabase.ProjectArgs(
                    name=args.name,
                    organization_id=args.organization_id,
                    db_pass=generated.result,
                    region=supabase.Region(args.region),
                    plan=supabase.Plan(args.plan),
                    kps_enabled=False,
                ),
                opts=pulumi.ResourceOptions(parent=self, protect=args.protect),
            )
            self.project_ref = project.id
        elif args.project_ref is not None and args.db_password is not None:
            password = pulumi.Output.secret(args.db_password)
            self.project_ref = pulumi.Output.from_input(args.project_ref)
        else:  # __post_init__ makes this unreachable
            raise ValueError("adopting a project needs project_ref and db_password")

        host = args.pooler_host or f"aws-0-{args.region}.pooler.supabase.com"

        def dsn(port: int) -> pulumi.Output[str]:
            return pulumi.Output.secret(
                pulumi.Output.all(self.project_ref, password).apply(
                    lambda v: (
                        f"postgresql://postgres.{v[0]}:{quote(v[1], safe='')}@{host}:{port}"
                        "/postgres?sslmode=require"
                    )
                )
            )

        self.transaction_dsn = dsn(TRANSACTION_PORT)
        self.session_dsn = dsn(SESSION_PORT)
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
