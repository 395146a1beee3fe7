"""Assemble the policy pack and serve it (`pulumi preview --policy-pack policies` runs this file).

Constructing the PolicyPack starts its gRPC analyzer server on 127.0.0.1, prints the port and
blocks; the CLI, and the offline evaluation in tools/policy_check.py, talk to it over gRPC.
"""

import importlib.util
import sys
from pathlib import Path


def _load_the_pack_as_policies() -> None:
    """Import this directory as the package `policies`, whatever the directory is called.

    The policy runtime runs this file with runpy.run_path (pulumi/policy/__main__.py), which puts
    the pack's own directory on sys.path, and the modules import one another as `policies.*`. A
    published or copied pack need not sit in a directory named `policies`, and another package of
    that name on sys.path must not stand in for this one.
    """
    directory = Path(__file__).resolve().parent
    spec = importlib.util.spec_from_file_location(
        "policies", directory / "__init__.py", submodule_search_locations=[str(directory)]
    )
    if spec is None or spec.loader is None:
        raise ImportError(f"the policy pack in {directory} has no __init__.py")
    package = importlib.util.module_from_spec(spec)
    sys.modules["policies"] = package
    spec.loader.exec_module(package)


_load_the_pack_as_policies()

from pulumi_policy import PolicyPack  # noqa: E402

from policies.pack import ENFORCEMENT_LEVEL, NAME, POLICIES  # noqa: E402

PolicyPack(name=NAME, enforcement_level=ENFORCEMENT_LEVEL, policies=list(POLICIES))
