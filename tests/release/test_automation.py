"""`pulumi up` through the Automation API: the inline program, the traffic targets, the failures."""

from __future__ import annotations

import inspect
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from components.traffic import LATEST
from release.automation import (
    LEDGER_TYPE,
    POOL_TYPE,
    SERVICE_TYPE,
    TRAFFIC_RESOURCES,
    AutomationDeployer,
    declare,
    ledger_entries,
    provider_env,
    release_of,
    traffic_targets,
)
from release.cloud import cloud_ports, stack_settings
from release.ports import DeployError
from stacks.ledger import Ledger, Outcome, Release
from stacks.program import build
from stacks.release_plan import ReleasePlan, ship, step
from stacks.settings import ConfigError
from tests.stacks.conftest import SECRETS
from tools.render import ROOT, render, stack_config

STABLE = Release("liftoff-prod-api-00000000000000aa", "liftoff-prod-worker-00000000000000aa")
CANDIDATE = Release("liftoff-prod-api-00000000000000bb", "liftoff-prod-worker-00000000000000bb")
LEDGER = Ledger().record(STABLE, Outcome.PROMOTED, "2026-11-20T10:00:00Z")


def urn(kind: str, name: str) -> str:
    return f"urn:pulumi:prod::liftoff::liftoff:index:Component${kind}::{name}"


def resource(kind: str, name: str, **extra: object) -> dict[str, object]:
    return {"urn": urn(kind, name), "type": kind, **extra}


STATE = {
    "resources": [
        resource("pulumi:pulumi:Stack", "liftoff-prod"),
        resource(SERVICE_TYPE, "api-service"),
        resource(POOL_TYPE, "worker-pool"),
        resource(LEDGER_TYPE, "release-ledger"),
        resource("gcp:cloudrunv2/job:Job", "migrations-job"),
        resource("docker-build:index:Image", "image"),
    ]
}


@pytest.mark.unit
def test_a_shift_targets_the_service_the_pool_and_the_ledger():
    assert traffic_targets(STATE) == [
        urn(SERVICE_TYPE, "api-service"),
        urn(POOL_TYPE, "worker-pool"),
        urn(LEDGER_TYPE, "release-ledger"),
    ]


@pytest.mark.unit
def test_the_traffic_resources_are_the_programs_own(prod):
    for kind, name in TRAFFIC_RESOURCES:
        assert prod.one(kind, name).type == kind
    # The scaler is a service too, and no traffic shift may touch it.
    assert {r.name for r in prod.of_type(SERVICE_TYPE)} == {"api-service", "scaler-service"}


@pytest.mark.unit
def test_another_service_is_not_a_target():
    state = {"resources": [*STATE["resources"], resource(SERVICE_TYPE, "scaler-service")]}
    assert urn(SERVICE_TYPE, "scaler-service") not in (traffic_targets(state) or [])


@pytest.mark.unit
def test_the_ledger_is_read_from_its_resource_in_the_state():
    entries = LEDGER.dumps()
    state = {
        "resources": [
            *STATE["resources"][:3],
            resource(LEDGER_TYPE, "release-ledger", outputs={"entries": entries}),
            resource(LEDGER_TYPE, "old-ledger", outputs={"entries": "[]"}, delete=True),
        ]
    }
    assert Ledger.from_json(ledger_entries(state)) == LEDGER
    assert ledger_entries({"resources": STATE["resources"][:3]}) is None
    assert ledger_entries(None) is None


@pytest.mark.unit
def test_a_stack_missing_one_of_them_is_updated_whole():
    without_ledger = {"resources": [r for r in STATE["resources"] if r["type"] != LEDGER_TYPE]}
    assert traffic_targets(without_ledger) is None
    assert traffic_targets({"resources": []}) is None
    assert traffic_targets(None) is None


@pytest.mark.unit
def test_resources_pending_deletion_are_not_targets():
    state = {"resources": [*STATE["resources"], resource(SERVICE_TYPE, "old-service", delete=True)]}
    assert urn(SERVICE_TYPE, "old-service") not in (traffic_targets(state) or [])


@pytest.mark.unit
def test_the_shipped_release_comes_from_the_outputs():
    outputs = {"api_revision": CANDIDATE.api, "worker_revision": CANDIDATE.worker, "api_url": "https://x"}
    assert release_of(outputs) == CANDIDATE
    with pytest.raises(DeployError, match="no worker_revision output"):
        release_of({"api_revision": CANDIDATE.api})


@pytest.mark.unit
def test_a_shift_refuses_a_plan_that_is_not_traffic_only():
    plan = ship(STABLE, LEDGER)
    assert not plan.traffic_only
    with pytest.raises(ValueError, match="traffic_only"):
        AutomationDeployer("prod").shift(plan)


@pytest.mark.unit
def test_the_policy_pack_is_the_stacks_own():
    assert AutomationDeployer("acme/prod", ROOT).policy_pack == (
        str(ROOT / "policies"),
        str(ROOT / "policies" / "config.prod.json"),
    )
    assert (ROOT / "policies" / "config.prod.json").is_file()


@pytest.mark.unit
@pytest.mark.skipif(shutil.which("pulumi") is not None, reason="the Pulumi CLI is installed")
def test_without_the_cli_every_call_is_a_deploy_error():
    deployer = AutomationDeployer("prod")
    with pytest.raises(DeployError, match="Pulumi CLI is missing"):
        deployer.outputs()
    with pytest.raises(DeployError, match="Pulumi CLI is missing"):
        deployer.ship(ship(STABLE, LEDGER))


def targets(inputs: list[dict[str, object]]) -> list[tuple[object, object, object]]:
    return [(t.get("revision", LATEST), t.get("percent", 0), t.get("tag")) for t in inputs]


@pytest.mark.unit
@pytest.mark.skipif(
    "release" not in inspect.signature(build).parameters,
    reason="stacks.program.build does not take release= yet (it comes with the program's release support)",
)
def test_the_inline_program_declares_the_plans_traffic_under_the_mock_engine():
    plan: ReleasePlan = step(
        STABLE, CANDIDATE, 10, LEDGER.record(CANDIDATE, Outcome.CANARY, "2026-11-24T07:00:00Z")
    )
    rendering = render("prod", stack_config("prod"), SECRETS, program=declare(plan))
    service = rendering.one(SERVICE_TYPE, "api-service").inputs
    assert targets(service["traffics"]) == [(STABLE.api, 90, "stable"), (CANDIDATE.api, 10, "candidate")]
    pool = rendering.one(POOL_TYPE).inputs
    assert targets(pool["instanceSplits"]) == [(STABLE.worker, 90, None), (CANDIDATE.worker, 10, None)]
    assert rendering.of_type(LEDGER_TYPE), "the ledger is a resource of the stack"
    assert Ledger.from_json(rendering.outputs["release_ledger"]) == plan.ledger
    assert {"api_revision", "worker_revision"} <= set(rendering.outputs)
    state = {"resources": [{"urn": r.urn, "type": r.type} for r in rendering.resources]}
    assert len(traffic_targets(state) or []) == 3


@pytest.mark.unit
def test_the_ports_are_built_from_the_stack_file(tmp_path: Path):
    document = yaml.safe_load((ROOT / "Pulumi.prod.yaml").read_text())
    for key in ("liftoff:openaiApiKey", "supabase:accessToken", "liftoff:supabaseJwtSecret"):
        document["config"][key] = {"secure": "v1:AAAAAAAAAAAAAAAA:encrypted"}
    document["config"]["liftoff:api"] = {**document["config"]["liftoff:api"], "public": False}
    (tmp_path / "Pulumi.prod.yaml").write_text(yaml.safe_dump(document))
    ports = cloud_ports("prod", root=tmp_path, token=lambda: "token")
    try:
        assert ports.settings.project == document["config"]["gcp:project"]
        assert ports.live.site.names.api == ports.metrics.site.names.api == "liftoff-prod-api"
        assert (ports.smoke.audience, ports.smoke.private) == ("liftoff-prod-api", True)
        assert ports.deployer.root == tmp_path
    finally:
        ports.close()


@pytest.mark.unit
def test_a_stack_file_without_its_secrets_is_refused_by_key():
    with pytest.raises(ConfigError, match="supabase:accessToken"):
        stack_settings("prod")


NEEDED = ("PULUMI_ACCESS_TOKEN", "GOOGLE_APPLICATION_CREDENTIALS", "LIFTOFF_SANDBOX_STACK")


@pytest.mark.testinfra
@pytest.mark.skipif(shutil.which("pulumi") is None, reason="needs the Pulumi CLI on PATH")
@pytest.mark.skipif(
    any(not os.environ.get(name) for name in NEEDED),
    reason=f"needs credentials for a sandbox project: set {', '.join(NEEDED)}",
)
def test_the_sandbox_stack_reads_back_through_the_automation_api():
    stack = os.environ["LIFTOFF_SANDBOX_STACK"]
    ports = cloud_ports(stack)
    try:
        outputs = ports.deployer.outputs()
        live = ports.live.read()
        for shares, name in (
            (live.api, ports.settings.api_service_name),
            (live.worker, ports.settings.worker_pool_name),
        ):
            assert not shares or sum(shares.values()) == 100
            assert all(revision.startswith(name) for revision in shares)
        Ledger.from_json(outputs.get("release_ledger"))
    finally:
        ports.close()


@pytest.mark.unit
def test_dynamic_providers_run_on_the_releases_virtualenv():
    env = provider_env({"PATH": "/usr/bin:/bin"}, "/work/liftoff/.venv")
    assert env["PULUMI_RUNTIME_VIRTUALENV"] == "/work/liftoff/.venv"
    assert env["PATH"] == "/work/liftoff/.venv/bin:/usr/bin:/bin"
    # This interpreter's own virtualenv is one whose python imports the project's providers.
    own = provider_env()
    python = Path(own["PULUMI_RUNTIME_VIRTUALENV"]) / "bin" / "python"
    found = subprocess.run(
        [str(python), "-c", "import components.jobrun, components.ledger, components.supabase_api"],
        cwd="/",
        capture_output=True,
        text=True,
        check=False,
    )
    assert found.returncode == 0, found.stderr
