"""UpstashRedis: a global Upstash database for the queue signal, over TLS, never evicting."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import quote

import pulumi
import upstash_pulumi as upstash

from components.rules import UpstashBudget, UpstashRegion, check


@dataclass(frozen=True)
class UpstashRedisArgs:
    """A global database whose primary sits near the Cloud Run region."""

    database_name: str
    primary_region: str
    # Upstash stops serving at this monthly spend (USD), so a runaway loop cannot run up a bill.
    budget: int = 20
    read_regions: Sequence[str] = ()
    protect: bool = True

    def __post_init__(self) -> None:
        check(
            self,
            primary_region=UpstashRegion,
            read_regions=Sequence[UpstashRegion],
            budget=UpstashBudget,
        )


class UpstashRedis(pulumi.ComponentResource):
    """Redis for the work signal. Eviction is off: the queue's hints must not be dropped for space."""

    dsn: pulumi.Output[str]
    endpoint: pulumi.Output[str]

    def __init__(self, name: str, args: UpstashRedisArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("liftoff:index:UpstashRedis", name, None, opts)
        database = upstash.RedisDatabase(
            f"{name}-database",
            upstash.RedisDatabaseArgs(
                database_name=args.database_name,
                region="global",
                primary_region=args.primary_region,
                read_regions=list(args.read_regions) or None,
                tls=True,
                eviction=False,
                budget=args.budget,
            ),
            opts=pulumi.ResourceOptions(parent=self, protect=args.protect),
        )
        self.endpoint = database.endpoint
        self.dsn = pulumi.Output.secret(
            pulumi.Output.all(database.password, database.endpoint, database.port).apply(
                lambda v: f"rediss://default:{quote(v[0], safe='')}@{v[1]}:{v[2]}"
            )
        )
        self.register_outputs({"dsn": self.dsn, "endpoint": self.endpoint})
