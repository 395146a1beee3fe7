"""Every traffic state of a release as a `pulumi up` of the declared program, via the Automation API.

The program runs inline (in this process) on a LocalWorkspace rooted at the project, so the
update uses Pulumi.yaml and Pulumi.<stack>.yaml (config, secrets provider) exactly as
`pulumi up` from the command line does. https://www.pulumi.com/docs/using-pulumi/automation-api/
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol, TypeVar, cast

import pulumi
from pulumi import automation as auto
from pulumi.automation.errors import CommandError, InvalidVersionError

from release.cancel import CANCELLATION, Cancellation
from release.ports import DeployError
from stacks.ledger import Release
from stacks.release_plan import ReleasePlan
from stacks.settings import StackSettings

ROOT = Path(__file__).resolve().parents[1]
PROJECT = "liftoff"
SERVICE_TYPE = "gcp:cloudrunv2/service:Service"
POOL_TYPE = "gcp:cloudrunv2/workerPool:WorkerPool"
LEDGER_TYPE = "pulumi-python:dynamic/liftoff:ReleaseLedger"
# What a traffic shift may change: the API's traffic, the pool's instance split, the ledger, each
# by type and by the program's name for it (stacks/program.py). The API is not the only service:
# the pool's scaler is one too, and a traffic-only update must not deploy it.
TRAFFIC_RESOURCES = (
    (SERVICE_TYPE, "api-service"),
    (POOL_TYPE, "worker-pool"),
    (LEDGER_TYPE, "release-ledger"),
)
TRAFFIC_TYPES = tuple(kind for kind, _ in TRAFFIC_RESOURCES)
# Enough of a failed update's output to see the engine's and the policies' messages.
MESSAGE_CHARS = 4000
T = TypeVar("T")


class _Build(Protocol):
    def __call__(self, settings: StackSettings, release: ReleasePlan | None = None) -> Mapping[str, Any]: ...


def declare(plan: ReleasePlan) -> Callable[[], Mapping[str, Any]]:
    """The program with `plan`: settings from the stack's config, returning the stack outputs."""

    def liftoff() -> Mapping[str, Any]:
        from stacks import program, settings

        build = cast(_Build, program.build)
        return build(settings.load(), release=plan)

    return liftoff


def inline_program(plan: ReleasePlan) -> Callable[[], None]:
    """The program as the Automation API runs it: outputs are exported, not returned."""
    declared = declare(plan)

    def liftoff() -> None:
        for key, value in declared().items():
            pulumi.export(key, value)

    return liftoff


def traffic_targets(deployment: Mapping[str, Any] | None) -> list[str] | None:
    """The URNs a traffic shift updates, from an exported state; None unless all three exist.

    Untargeted resources (the image build, the migrations) are not run and give their recorded
    outputs; the template of the targeted ones is the program's to keep when the plan is
    traffic_only. The root stack is always targeted, so its outputs (the release_ledger the next
    run reads back) follow (https://github.com/pulumi/pulumi/pull/12834).
    A targeted update cannot create a resource it does not target
    (https://github.com/pulumi/pulumi/pull/3251), so a stack that lacks one of them (before the
    first release, or before the ledger existed) is updated whole.
    """
    resources = [r for r in (deployment or {}).get("resources") or [] if not r.get("delete")]
    found = {
        kind: sorted(
            str(r["urn"])
            for r in resources
            if r.get("type") == kind and str(r["urn"]).rsplit("::", 1)[-1] == name
        )
        for kind, name in TRAFFIC_RESOURCES
    }
    if not all(found.values()):
        return None
    return [urn for kind in TRAFFIC_TYPES for urn in found[kind]]


def ledger_entries(deployment: Mapping[str, Any] | None) -> Any:
    """The ledger as its ReleaseLedger resource holds it in an exported state (None before one exists).

    Read from the resource itself rather than from the stack outputs: whatever a targeted update
    does to the root stack's outputs, the resource it updated holds what was recorded.
    """
    for resource in (deployment or {}).get("resources") or []:
        if resource.get("type") == LEDGER_TYPE and not resource.get("delete"):
            return (resource.get("outputs") or {}).get("entries")
    return None


def provider_env(environ: Mapping[str, str] | None = None, prefix: str | None = None) -> dict[str, str]:
    """The engine's environment: dynamic providers run on this interpreter's virtualenv.

    The CLI starts a dynamic provider (JobRun, SupabaseProject, ReleaseLedger) with
    `pulumi-resource-pulumi-python`, which runs PULUMI_RUNTIME_VIRTUALENV's python, else the first
    `python3` on PATH. A `python3` without this project's packages cannot unpickle the providers
    (pulumi/pulumi#7960), so both point at the virtualenv running the release (where `make install`
    put the project on the path). Pulumi.yaml's own `virtualenv` option, passed to the provider as
    PULUMI_RUNTIME_VIRTUALENV ahead of the environment's, names the same `.venv` at the root
    (tools/runtime.py, tests/tools/test_runtime.py); this value serves a project that names none.
    """
    environ = os.environ if environ is None else environ
    prefix = sys.prefix if prefix is None else prefix
    bin_dir = str(Path(prefix) / "bin")
    path = environ.get("PATH", "")
    return {
        "PULUMI_RUNTIME_VIRTUALENV": prefix,
        "VIRTUAL_ENV": prefix,
        "PATH": f"{bin_dir}{os.pathsep}{path}" if path else bin_dir,
    }


def release_of(outputs: Mapping[str, Any]) -> Release:
    """The release an update shipped, from its api_revision and worker_revision outputs."""
    api, worker = outputs.get("api_revision"), outputs.get("worker_revision")
    missing = [name for name, value in (("api_revision", api), ("worker_revision", worker)) if not value]
    if missing:
        raise DeployError(f"the update finished but the stack has no {' or '.join(missing)} output")
    return Release(api=str(api), worker=str(worker))


class AutomationDeployer:
    """`pulumi up` of one stack with a release plan, checked by the policy pack."""

    def __init__(
        self,
        stack: str,
        root: Path = ROOT,
        *,
        on_output: Callable[[str], Any] = print,
        cancellation: Cancellation = CANCELLATION,
    ) -> None:
        self.stack = stack
        self.root = root
        self.on_output = on_output
        self.cancellation = cancellation

    @property
    def policy_pack(self) -> tuple[str, str]:
        """The pack and its config for this stack, as .github/workflows/release.yml passes them."""
        name = self.stack.rsplit("/", 1)[-1]
        return str(self.root / "policies"), str(self.root / "policies" / f"config.{name}.json")

    def ship(self, plan: ReleasePlan) -> Release:
        # Refreshed first: the worker pool's instance count is its scaler's, and the provider sends
        # the recorded one with any update of the pool (components/cloudrun.py, _scaled_options).
        return release_of(self._up(plan, targets=None, refresh=True))

    def shift(self, plan: ReleasePlan) -> None:
        if not plan.traffic_only:
            raise ValueError("a shift moves traffic only: its plan must be traffic_only")
        targets = traffic_targets(self._guard(lambda: self._selected().export_stack().deployment))
        # Refreshed first: traffic moved by hand (gcloud) must not hide a change the plan makes.
        self._up(plan, targets=targets, refresh=True)

    def ledger(self) -> Any:
        """The recorded ledger (JSON text), from the stack's state."""
        return ledger_entries(self._guard(lambda: self._selected().export_stack().deployment))

    def outputs(self) -> dict[str, Any]:
        """The stack's current outputs (plain values), {} before its first update."""
        found = self._guard(lambda: self._selected().outputs())
        return {key: output.value for key, output in found.items()}

    def _selected(self, plan: ReleasePlan | None = None) -> auto.Stack:
        if plan is None:
            return auto.select_stack(self.stack, work_dir=str(self.root), opts=self._options())
        return auto.select_stack(
            self.stack, project_name=PROJECT, program=inline_program(plan), opts=self._options()
        )

    def _options(self) -> auto.LocalWorkspaceOptions:
        return auto.LocalWorkspaceOptions(work_dir=str(self.root), env_vars=provider_env())

    def _up(self, plan: ReleasePlan, *, targets: list[str] | None, refresh: bool) -> dict[str, Any]:
        if self.cancellation.requested:
            raise DeployError(f"{self.stack}: the release was cancelled, so no further `pulumi up` starts")
        pack, config = self.policy_pack

        def up() -> auto.UpResult:
            return self._selected(plan).up(
                target=targets,
                policy_packs=[pack],
                policy_pack_configs=[config],
                diff=True,
                refresh=refresh,
                color="never",
                on_output=self.on_output,
            )

        result = self._guard(up)
        return {key: output.value for key, output in result.outputs.items()}

    def _guard(self, call: Callable[[], T]) -> T:
        """`call`, with the CLI's and the engine's failures as DeployError."""
        try:
            return call()
        except CommandError as error:
            how = "was cancelled" if self.cancellation.requested else "failed"
            raise DeployError(f"pulumi ({self.stack}) {how}: {str(error)[-MESSAGE_CHARS:]}") from error
        except (FileNotFoundError, InvalidVersionError) as error:
            raise DeployError(f"the Pulumi CLI is missing or too old: {error}") from error
