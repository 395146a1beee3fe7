"""JobRun's provider against a local double of the Cloud Run Admin API (jobs.run, executions.get)."""

from __future__ import annotations

import base64
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import dill
import pytest
from pulumi.dynamic.dynamic import serialize_provider

from components.jobrun import JobRunError, JobRunProvider
from tests.http_double import Reply, Request, serve_json

pytestmark = pytest.mark.unit

JOB = "projects/p/locations/europe-west1/jobs/liftoff-prod-migrate"
TOKEN = "test-access-token"


@dataclass
class RunApi:
    """How the double behaves, and what it was asked."""

    url: str = ""
    polls_until_done: int = 2
    succeed: bool = True
    throttle_first: int = 0
    refuse_with: int | None = None
    fail_run_with: int | None = None
    cancelled: list[str] = field(default_factory=list)
    requests: list[tuple[str, str, str]] = field(default_factory=list)
    executions: dict[str, int] = field(default_factory=dict)

    def __call__(self, request: Request) -> Reply:
        path = request.target
        self.requests.append((request.method, path, request.headers.get("authorization", "")))
        if self.refuse_with:
            return Reply(self.refuse_with, {"error": {"code": self.refuse_with, "message": "denied"}})
        if self.throttle_first > 0:
            self.throttle_first -= 1
            return Reply(429, {"error": {"code": 429}}, {"Retry-After": "1"})
        if request.method == "POST" and path == f"/v2/{JOB}:run" and self.fail_run_with:
            return Reply(self.fail_run_with, {"error": {"code": self.fail_run_with}})
        if request.method == "POST" and path.endswith(":cancel"):
            self.cancelled.append(path.removeprefix("/v2/").removesuffix(":cancel"))
            return Reply(200, {"name": "op-cancel"})
        if request.method == "POST" and path == f"/v2/{JOB}:run":
            return Reply(200, self._run())
        if request.method == "GET" and path.removeprefix("/v2/") in self.executions:
            return Reply(200, self._poll(path.removeprefix("/v2/")))
        return Reply(404, {"error": {"code": 404, "message": path}})

    def _run(self) -> dict[str, Any]:
        execution = f"{JOB}/executions/liftoff-prod-migrate-{len(self.executions) + 1:05d}"
        self.executions[execution] = 0
        return {
            "name": "projects/p/locations/europe-west1/operations/op-1",
            "metadata": {"name": execution},
            "done": False,
        }

    def _poll(self, name: str) -> dict[str, Any]:
        self.executions[name] += 1
        body: dict[str, Any] = {"name": name, "taskCount": 1, "logUri": "https://logs"}
        if self.executions[name] >= self.polls_until_done:
            body["completionTime"] = "2026-11-24T05:00:00Z"
            body["succeededCount" if self.succeed else "failedCount"] = 1
        return body


@pytest.fixture
def api() -> Iterator[RunApi]:
    state = RunApi()
    with serve_json(state) as served:
        state.url = served.url
        yield state


def provider(api: RunApi, slept: list[float] | None = None) -> JobRunProvider:
    record: list[float] = [] if slept is None else slept
    return JobRunProvider(endpoint=api.url, token=lambda: TOKEN, poll_seconds=0.01, sleep=record.append)


def outs(result: Any) -> dict[str, Any]:
    assert result.outs is not None
    return dict(result.outs)


PROPS = {"job": JOB, "trigger": "sha256:aa", "timeout_seconds": 60}


def test_create_runs_the_job_and_waits_for_success(api):
    result = provider(api).create(dict(PROPS))
    (execution,) = api.executions
    assert result.id == execution
    assert outs(result)["execution"] == execution
    assert api.executions[execution] == 2, "polled until completion"
    assert all(auth == f"Bearer {TOKEN}" for _, _, auth in api.requests)


def test_a_failed_execution_fails_the_step_and_names_it(api):
    api.succeed = False
    with pytest.raises(JobRunError, match=r"liftoff-prod-migrate-00001 failed \(0 of 1 tasks"):
        provider(api).create(dict(PROPS))


def test_update_runs_again_as_a_new_execution(api):
    runner = provider(api)
    first = outs(runner.create(dict(PROPS)))["execution"]
    second = outs(runner.update(first, dict(PROPS), {**PROPS, "trigger": "sha256:bb"}))["execution"]
    # Cloud Run names each execution: a retry never collides with a failed one's name.
    assert first != second
    assert len(api.executions) == 2


def test_throttling_is_retried_after_the_time_it_asks(api):
    api.throttle_first = 2
    slept: list[float] = []
    provider(api, slept).create(dict(PROPS))
    assert slept[:2] == [1.0, 1.0]


def test_a_refusal_is_not_retried(api):
    api.refuse_with = 403
    with pytest.raises(JobRunError, match="403"):
        provider(api).create(dict(PROPS))
    assert len(api.requests) == 1


def test_diff_runs_again_only_for_a_new_trigger(api):
    runner = provider(api)
    assert not runner.diff("x", dict(PROPS), dict(PROPS)).changes
    assert runner.diff("x", dict(PROPS), {**PROPS, "trigger": "sha256:bb"}).changes


def test_the_provider_unpickles_in_a_separate_process():
    """Pulumi's dynamic-provider host unpickles the provider in its own process, on this venv."""
    blob = serialize_provider(JobRunProvider())
    code = (
        "import base64, sys, dill; p = dill.loads(base64.b64decode(sys.stdin.read()));"
        " print(type(p).__module__, type(p).__name__)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], input=blob, capture_output=True, text=True, cwd="/", check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["components.jobrun", "JobRunProvider"]


def test_a_run_that_may_have_started_is_not_sent_again(api):
    """A 500 to :run may come after the execution started: a second one would migrate twice."""
    api.fail_run_with = 500
    with pytest.raises(JobRunError, match="500"):
        provider(api).create(dict(PROPS))
    assert [r[:2] for r in api.requests] == [("POST", f"/v2/{JOB}:run")]


def test_an_execution_past_its_time_is_cancelled_before_failing(api, monkeypatch):
    api.polls_until_done = 10**6
    clock = iter(range(0, 10**6, 400))
    monkeypatch.setattr("components.jobrun.time.monotonic", lambda: float(next(clock)))
    with pytest.raises(JobRunError, match="did not finish in time and was cancelled"):
        provider(api).create({**PROPS, "timeout_seconds": 60})
    assert api.cancelled == list(api.executions)


def test_the_token_is_not_pickled_with_the_provider():
    from components.googleapi import GoogleToken

    token = GoogleToken()
    token._credentials = object()  # as if it had fetched credentials
    blob = serialize_provider(JobRunProvider(token=token))
    restored = dill.loads(base64.b64decode(blob))  # noqa: S301 (bytes made just above)
    assert restored.token._credentials is None
