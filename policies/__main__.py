"""Assemble the policy pack and serve it (`pulumi preview --policy-pack policies` runs this file).

Constructing the PolicyPack starts its gRPC analyzer server on 127.0.0.1, prints the port and
blocks; the CLI, and the offline evaluation in stacks/policy_check.py, talk to it over gRPC.
"""

import sys
from pathlib import Path

# The policy runtime runs this file with policies/ on sys.path; the modules import as `policies.*`.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pulumi_policy import PolicyPack  # noqa: E402

from policies.pack import ENFORCEMENT_LEVEL, NAME, POLICIES  # noqa: E402

PolicyPack(name=NAME, enforcement_level=ENFORCEMENT_LEVEL, policies=list(POLICIES))
