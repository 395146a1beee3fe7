"""The whole rendered stacks against the pack, through its gRPC analyzer server as the CLI drives it:
clean as committed, and a broken copy caught."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from policies.pack import POLICIES
from stacks.bootstrap.program import build, load
from tests.stacks.conftest import render_stack
from tools.policy_check import evaluate, policy_config
from tools.render import ROOT, Registered, Rendering, render, stack_config

pytestmark = pytest.mark.policy


@pytest.mark.parametrize("stack", ["staging", "prod"])
def test_committed_stacks_have_no_violations(stack, request):
    rendering: Rendering = request.getfixturevalue(stack)
    found = evaluate(rendering)
    assert [v for v in found if v.mandatory] == []
    assert [v for v in found if v.message.startswith("can't run policy")] == []


def test_the_bootstrap_has_no_violations(policy_analyzer):
    bootstrap = ROOT / "stacks" / "bootstrap"
    rendering = render(
        "org", stack_config("org", bootstrap), program=lambda: build(load()), project="liftoff-bootstrap"
    )
    assert len(rendering.resources) > 10
    assert [v for v in evaluate(rendering, config={}, analyzer=policy_analyzer) if v.mandatory] == []


@pytest.mark.parametrize("stack", ["staging", "prod"])
def test_policy_config_matches_the_stack(stack):
    config = policy_config(stack)
    assert (
        config["api-public-only-when-declared"]["publicApi"] == stack_config(stack)["liftoff:api"]["public"]
    )
    assert config["prod-deletion-protection"]["environment"] == stack
    assert set(config) <= {p.name for p in POLICIES}
    assert json.loads((ROOT / "policies" / f"config.{stack}.json").read_text()) == config


def _with(rendering: Rendering, extra: list[Registered], edit: dict[str, object] | None = None) -> Rendering:
    resources = []
    for resource in rendering.resources:
        if edit and resource.type == "gcp:cloudrunv2/service:Service" and resource.name == "api-service":
            resource = replace(resource, inputs={**resource.inputs, **edit})
        resources.append(resource)
    return Rendering(stack=rendering.stack, resources=resources + extra, outputs=rendering.outputs)


def test_broken_prod_is_caught(prod, policy_analyzer):
    service = prod.one("gcp:cloudrunv2/service:Service", "api-service")
    template = service.inputs["template"]
    (container,) = template["containers"]
    plain_db = {"name": "DATABASE_URL", "value": "postgresql://postgres.ref:hunter2@pooler:6543/postgres"}
    envs = [e for e in container["envs"] if e["name"] != "DATABASE_URL"] + [plain_db]
    tagged = container["image"].split("@")[0] + ":latest"
    broken_template = {**template, "containers": [{**container, "envs": envs, "image": tagged}]}
    short_split = [{"type": "TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST", "percent": 90}]
    public_worker = Registered(
        type="gcp:cloudrunv2/workerPoolIamMember:WorkerPoolIamMember",
        name="worker-public",
        custom=True,
        inputs={"name": "liftoff-prod-worker", "role": "roles/run.invoker", "member": "allUsers"},
    )
    edit = {"template": broken_template, "deletionProtection": False, "traffics": short_split}
    broken = _with(prod, [public_worker], edit)
    found = {(v.policy, v.mandatory) for v in evaluate(broken, analyzer=policy_analyzer)}
    assert ("no-plain-secrets", True) in found
    assert ("worker-never-public", True) in found
    assert ("prod-deletion-protection", True) in found
    # The rules that read lists, which the analyzer delivers as Sequence proxies.
    assert ("images-by-digest", True) in found
    assert ("traffic-adds-up", True) in found


def test_a_private_api_admits_the_uptime_checks_caller_and_still_no_public(policy_analyzer):
    """The Monitoring service agent's invoker grant passes the pack; allUsers beside it does not."""
    rendering = render_stack("staging", {"liftoff:api": {"public": False}})
    grant = rendering.one("gcp:cloudrunv2/serviceIamMember:ServiceIamMember", "monitoring-uptime-invoker")
    assert grant.inputs["member"].endswith("@gcp-sa-monitoring-notification.iam.gserviceaccount.com")
    private = {**policy_config("staging"), "api-public-only-when-declared": {"publicApi": False}}
    assert [v for v in evaluate(rendering, private, policy_analyzer) if v.mandatory] == []
    public_grant = replace(grant, name="api-invoker-public", inputs={**grant.inputs, "member": "allUsers"})
    found = evaluate(_with(rendering, [public_grant]), private, policy_analyzer)
    refused = [(v.policy, v.mandatory) for v in found if v.mandatory]
    assert refused == [("api-public-only-when-declared", True)]
