"""Assemble the policy pack (`pulumi preview --policy-pack policies`)."""

import sys
from pathlib import Path

# The policy runtime runs this file with policies/ on sys.path; the modules import as `policies.*`.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pulumi_policy import EnforcementLevel, PolicyPack  # noqa: E402

from policies.pack import POLICIES  # noqa: E402

PolicyPack(name="liftoff", enforcement_level=EnforcementLevel.MANDATORY, policies=list(POLICIES))
