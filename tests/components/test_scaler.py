"""PoolScaler under the mock engine: its service, its two narrow grants, its invokers and schedule."""

from __future__ import annotations

from typing import Any

import pytest

from components.cloudrun import Container
from components.scaler import ACT_AS_PERMISSIONS, POOL_PERMISSIONS, PoolScaler, PoolScalerArgs
from tests.components.conftest import Declare

pytestmark = pytest.mark.unit

SCALER = "liftoff-prod-scaler@acme-prod.iam.gserviceaccount.com"
WORKER = "liftoff-prod-worker@acme-prod.iam.gserviceaccount.com"
API = "liftoff-prod-api@acme-prod.iam.gserviceaccount.com"
SCHEDULER = "liftoff-prod-scheduler@acme-prod.iam.gserviceaccount.com"
IMAGE = "europe-west1-docker.pkg.dev/acme-prod/liftoff/app@sha256:" + "ab" * 32


def scaler_args(**overrides: Any) -> PoolScalerArgs:
    values: dict[str, Any] = {
        "service_name": "liftoff-prod-scaler",
        "role_prefix": "liftoff_prod",
        "region": "europe-west1",
        "project": "acme-prod",
        "pool_name": "liftoff-prod-worker",
        "container": Container(image=IMAGE, image_digest="sha256:" + "ab" * 32, service_account=SCALER),
        "worker_account": WORKER,
        "scheduler_account": SCHEDULER,
        "wakers": (API,),
        **overrides,
    }
    return PoolScalerArgs(**values)


def test_the_scaler_holds_the_pools_count_and_nothing_else(declare: Declare):
    declared = declare(lambda: {"url": PoolScaler("scaler", scaler_args()).url})
    roles = {
        r.inputs["roleId"]: r.inputs["permissions"]
        for r in declared.of_type("gcp:projects/iAMCustomRole:IAMCustomRole")
    }
    assert roles == {
        "liftoff_prod_pool_scaler": list(POOL_PERMISSIONS),
        "liftoff_prod_worker_act_as": list(ACT_AS_PERMISSIONS),
    }
    pool = declared.one("gcp:cloudrunv2/workerPoolIamMember:WorkerPoolIamMember").inputs
    assert (pool["name"], pool["member"]) == ("liftoff-prod-worker", f"serviceAccount:{SCALER}")
    assert pool["role"] == "projects/acme-prod/roles/liftoff_prod_pool_scaler"
    account = declared.one("gcp:serviceaccount/iAMMember:IAMMember").inputs
    assert account["serviceAccountId"] == f"projects/acme-prod/serviceAccounts/{WORKER}"
    assert account["role"] == "projects/acme-prod/roles/liftoff_prod_worker_act_as"
    invokers = {
        (r.inputs["role"], r.inputs["member"])
        for r in declared.of_type("gcp:cloudrunv2/serviceIamMember:ServiceIamMember")
    }
    assert invokers == {("roles/run.invoker", f"serviceAccount:{a}") for a in (API, SCHEDULER)}


def test_the_service_is_request_billed_one_instance_and_scheduled_each_minute(declare: Declare):
    declared = declare(lambda: {"url": PoolScaler("scaler", scaler_args()).url})
    service = declared.one("gcp:cloudrunv2/service:Service").inputs
    template = service["template"]
    assert template["scaling"] == {"minInstanceCount": 0, "maxInstanceCount": 1}
    (container,) = template["containers"]
    assert container["args"] == ["python", "-m", "app", "scaler"]
    assert container["resources"]["cpuIdle"] is True
    assert template["serviceAccount"] == SCALER
    schedule = declared.one("gcp:cloudscheduler/job:Job").inputs
    assert schedule["schedule"] == "* * * * *"
    target = schedule["httpTarget"]
    assert target["uri"].endswith("/reconcile") and target["httpMethod"] == "POST"
    assert target["oidcToken"] == {
        "serviceAccountEmail": SCHEDULER,
        "audience": target["uri"][: -len("/reconcile")],
    }


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"role_prefix": "liftoff-prod"}, "role_prefix"),
        ({"role_prefix": "x" * 60}, "role_prefix"),
        ({"schedule": "every minute"}, "schedule"),
    ],
)
def test_bad_arguments_are_refused_naming_the_field(overrides: dict[str, Any], message: str):
    with pytest.raises(ValueError, match=message):
        scaler_args(**overrides)
