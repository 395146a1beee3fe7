"""Each rule is defined once: the stack settings accept exactly what the components accept."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from components.cloudrun import ApiServiceArgs, Container, JobArgs, RetentionJobArgs, WorkerPoolArgs
from components.monitoring import MonitoringArgs
from stacks.settings import AlertSettings, ApiSettings, Place, RetentionSettings, Section, WorkerSettings

pytestmark = pytest.mark.unit

CONTAINER = Container(image="image", image_digest="sha256:" + "0" * 64, service_account="sa@p.iam")


def api_args(**changes: Any) -> ApiServiceArgs:
    return ApiServiceArgs(
        service_name="liftoff-prod-api", region="europe-west1", project="p", container=CONTAINER, **changes
    )


def container(**changes: Any) -> Container:
    return Container(image="image", image_digest="sha256:" + "0" * 64, service_account="sa@p.iam", **changes)


def monitoring_args(**changes: Any) -> MonitoringArgs:
    fields = {"notification_email": "oncall@example.com", **changes}
    return MonitoringArgs(
        project="p",
        region="europe-west1",
        prefix="liftoff-prod",
        api_service_name="s",
        api_url="u",
        worker_pool_name="w",
        **fields,
    )


def pool_args(instances: int) -> WorkerPoolArgs:
    return WorkerPoolArgs(
        pool_name="p", region="europe-west1", project="p", container=CONTAINER, instances=instances
    )


def email_args(email: str) -> MonitoringArgs:
    return monitoring_args(notification_email=email)


def latency_args(milliseconds: int) -> MonitoringArgs:
    return monitoring_args(p95_latency_ms=milliseconds)


def retention_args(schedule: str) -> RetentionJobArgs:
    job = JobArgs(job_name="j", region="europe-west1", project="p", container=CONTAINER, command=("x",))
    return RetentionJobArgs(job=job, schedule=schedule)


Build = Callable[[Any], object]
# (component field, the component's args from a value, settings model, settings key, accepted, refused)
SHARED: list[tuple[str, Build, type[Section], str, list[Any], list[Any]]] = [
    ("cpu", lambda v: container(cpu=v), WorkerSettings, "cpu", ["1", "8", "500m"], ["3.5", "9", "0"]),
    ("memory", lambda v: container(memory=v), ApiSettings, "memory", ["512Mi", "2Gi"], ["1GB", "0Mi"]),
    ("min_instances", lambda v: api_args(min_instances=v), ApiSettings, "minInstances", [0, 3], [-1, 1001]),
    ("max_instances", lambda v: api_args(max_instances=v), ApiSettings, "maxInstances", [1, 1000], [0, 1001]),
    ("concurrency", lambda v: api_args(concurrency=v), ApiSettings, "concurrency", [1, 1000], [0, 1001]),
    ("timeout_seconds", lambda v: api_args(timeout_seconds=v), ApiSettings, "timeoutSeconds", [1], [0, 3601]),
    ("instances", pool_args, WorkerSettings, "instances", [0, 100], [-1, 101]),
    ("schedule", retention_args, RetentionSettings, "schedule", ["17 3 * * *"], ["daily", "* * * *"]),
    ("notification_email", email_args, AlertSettings, "email", ["a@b.co"], ["nope", "a@b", "a b@c.de"]),
    (
        "error_ratio",
        lambda v: monitoring_args(error_ratio=v),
        AlertSettings,
        "errorRatio",
        [0.5],
        [0, 1, 2.0],
    ),
    ("p95_latency_ms", latency_args, AlertSettings, "p95LatencyMs", [1, 600_000], [0, 600_001]),
]


def settings_accept(model: type[Section], key: str, value: Any) -> bool:
    raw = {key: value, **({"email": "a@b.co"} if model is AlertSettings and key != "email" else {})}
    try:
        model.model_validate(raw, context=Place())
    except ValueError:
        return False
    return True


@pytest.mark.parametrize(
    ("field", "build", "model", "key", "good", "bad"), SHARED, ids=[case[0] for case in SHARED]
)
def test_components_and_settings_share_each_rule(field, build, model, key, good, bad):
    for value in good:
        build(value)
        assert settings_accept(model, key, value), (key, value)
    for value in bad:
        with pytest.raises(ValueError, match=rf"^{field}: "):
            build(value)
        assert not settings_accept(model, key, value), (key, value)
