"""The tenant kept for release probes: synthetic requests and jobs a canary is judged on.

Its jobs are answered by the worker's own offline provider (no AI cost), its organization has
submission limits of its own, sized to the most probes a release sends, and shares none with
real tenants, and every table, log line
and metric tells its work apart by this organization id (`probe=true` in logs and metrics).
"""

from __future__ import annotations

from uuid import UUID

PROBE_ORGANIZATION_ID = UUID("00000000-0000-4000-8000-00000000fe01")
PROBE_USER_ID = UUID("00000000-0000-4000-8000-00000000fe02")
PROBE_ORGANIZATION_NAME = "Liftoff release probes"
# The model a probe job names; the worker answers it offline whatever AI_PROVIDER says.
PROBE_MODEL = "liftoff-probe"


def is_probe(organization_id: UUID) -> bool:
    """Whether work of this organization is a release probe's."""
    return organization_id == PROBE_ORGANIZATION_ID
