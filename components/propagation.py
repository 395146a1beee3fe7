"""GrantPropagation: after new IAM grants, wait the time Google says they typically take to work.

IAM is eventually consistent: a grant takes effect "typically [in] 2 minutes, potentially 7
minutes or longer" (https://cloud.google.com/iam/docs/access-change-propagation). Cloud Run
checks a workload's access to the secrets it references when a job or revision is created
(hashicorp/terraform-provider-google#13828 for jobs; "Permission denied on secret" for revisions),
and the bridged provider does not retry that (its IAM retry predicate, IamMemberMissing, is not
applied to Cloud Run), so a workload created the moment its grant is made fails on a first
deploy and succeeds on the next (hashicorp/terraform-provider-google#16350).

Workloads depend on this resource, which depends on the grants: when a grant is new (a first
deploy, a new secret or accessor) it waits the typical propagation time before anything uses it.
The wait runs beside whatever else the update does meanwhile (the image build), and not at all
when no grant is new. Grants slower than typical are not waited for here: the migrations run
(components/jobrun.py) retries for the documented 7 minutes, and a workload created before its
grant works fails the update, which the next `pulumi up` completes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, ReadResult, ResourceProvider, UpdateResult

from components.dynamic import DynamicResource

# Google's "typically 2 minutes".
TYPICAL_SECONDS = 120


class GrantPropagationProvider(ResourceProvider):
    """Create, and an update that adds grants, sleep; nothing is called, nothing is kept elsewhere."""

    def __init__(self, sleep: Callable[[float], None] = time.sleep) -> None:
        self.sleep = sleep

    def create(self, props: dict[str, Any]) -> CreateResult:
        self._wait(props)
        return CreateResult(id_="grant-propagation", outs=dict(props))

    def update(self, _id: str, _olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        self._wait(news)
        return UpdateResult(outs=dict(news))

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        # Only a grant that was not there before has anything to wait for; one removed has not.
        added = new_grants(olds.get("grants"), news.get("grants"))
        return DiffResult(changes=bool(added), replaces=[], delete_before_replace=False)

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        return ReadResult(id_=id_, outs=props)

    def delete(self, _id: str, _props: dict[str, Any]) -> None:
        return None

    def _wait(self, props: dict[str, Any]) -> None:
        seconds = float(props.get("seconds") or 0)
        pulumi.log.info(f"waiting {seconds:g}s for new IAM grants to take effect (typically 2 minutes)")
        self.sleep(seconds)


def new_grants(olds: Any, news: Any) -> list[str]:
    """The grants in `news` and not in `olds`; a value still unknown (at preview) counts as new."""
    before = {str(g) for g in olds or []}
    return [str(g) for g in news or [] if not isinstance(g, str) or g not in before]


class GrantPropagation(DynamicResource, module="liftoff", name="GrantPropagation"):
    """Done `seconds` after the last new grant among `grants` (their IDs) was made."""

    TYPE: ClassVar[str] = "pulumi-python:dynamic/liftoff:GrantPropagation"
    # What the provider reads: a dynamic resource has no schema to check them against.
    PROPERTIES: ClassVar[frozenset[str]] = frozenset({"grants", "seconds"})

    def __init__(
        self,
        name: str,
        grants: Sequence[pulumi.CustomResource],
        seconds: float = TYPICAL_SECONDS,
        opts: pulumi.ResourceOptions | None = None,
        provider: GrantPropagationProvider | None = None,
    ) -> None:
        props = {"grants": [grant.id for grant in grants], "seconds": seconds}
        after = pulumi.ResourceOptions(depends_on=list(grants))
        super().__init__(
            provider or GrantPropagationProvider(), name, props, pulumi.ResourceOptions.merge(opts, after)
        )
