"""JobRun's provider against a local double of the Cloud Run Admin API (jobs.run, executions.get)."""

from __future__ import annotations

import asyncio
import base64
import functools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dill
import grpc  # type: ignore[import-untyped]
import pytest
from pulumi.dynamic.dynamic import serialize_provider
from pulumi.runtime import rpc
from pulumi.runtime.proto import provider_pb2
from pulumi.runtime.proto.provider_pb2_grpc import ResourceProviderStub

from components.jobrun import PROPAGATION_SECONDS, START_MARGIN_SECONDS, JobRunError, JobRunProvider
from tests.http_double import Reply, Request, google_error, serve_json
from tests.stacks.cloud import Iam

pytestmark = pytest.mark.unit

JOB = "projects/p/locations/europe-west1/jobs/liftoff-prod-migrate"
TOKEN = "test-access-token"


MIGRATE = "serviceAccount:liftoff-prod-migrate@p.iam.gserviceaccount.com"
DEPLOYER = "serviceAccount:liftoff-deployer@p.iam.gserviceaccount.com"
SECRET = "liftoff-prod-migrations-database-url"
# What the deployer needs to start an execution that runs as the migrate account.
ACT_AS = f"projects/p/serviceAccounts/{MIGRATE.removeprefix('serviceAccount:')}"


@dataclass
class Run:
    """One execution as the double holds it."""

    polls: int = 0
    # Why it cannot start: its account's access to a secret has not taken effect.
    denied: str | None = None
    cancelled: bool = False


@dataclass
class RunApi:
    """How the double behaves, and what it was asked.

    Access follows the control-plane model's IAM rule (tests/stacks/cloud.py, Iam): `:run` needs
    the deployer's grant on the migrate account, an execution needs the migrate account's grant on
    its secret, each effective only `iam.delay` seconds after it was made. The provider's clock and
    sleep are the model's, so backing off is what lets a grant take effect.
    """

    url: str = ""
    polls_until_done: int = 2
    succeed: bool = True
    throttle_first: int = 0
    refuse_with: int | None = None
    fail_run_with: int | None = None
    iam: Iam = field(default_factory=Iam)
    cancelled: list[str] = field(default_factory=list)
    requests: list[tuple[str, str, str]] = field(default_factory=list)
    executions: dict[str, Run] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.iam.grant(ACT_AS, DEPLOYER)
        self.iam.grant(SECRET, MIGRATE)

    def __call__(self, request: Request) -> Reply:
        path = request.target
        self.requests.append((request.method, path, request.headers.get("authorization", "")))
        if self.throttle_first > 0:
            self.throttle_first -= 1
            return Reply(429, {"error": {"code": 429}}, {"Retry-After": "1"})
        if request.method == "GET" and request.path == f"/v2/{JOB}/executions":
            return Reply(200, self._list())
        if request.method == "POST" and path == f"/v2/{JOB}:run":
            return self._run()
        if request.method == "POST" and path.endswith(":cancel"):
            name = path.removeprefix("/v2/").removesuffix(":cancel")
            self.cancelled.append(name)
            self.executions[name].cancelled = True
            return Reply(200, {"name": "op-cancel"})
        if request.method == "GET" and path.removeprefix("/v2/") in self.executions:
            return Reply(200, self._poll(path.removeprefix("/v2/")))
        return Reply(404, {"error": {"code": 404, "message": path}})

    def leave_running(self) -> str:
        """An execution an earlier, cancelled update started and nobody waited for."""
        return self._start()

    def _run(self) -> Reply:
        if self.refuse_with:
            return google_error(self.refuse_with, "PERMISSION_DENIED", "denied")
        if self.fail_run_with:
            return Reply(self.fail_run_with, {"error": {"code": self.fail_run_with}})
        if not self.iam.allows(ACT_AS, DEPLOYER):
            account = ACT_AS.rsplit("/", 1)[-1]
            message = f"Permission 'iam.serviceaccounts.actAs' denied on service account {account}"
            return google_error(403, "PERMISSION_DENIED", message + " (or it may not exist).")
        execution = self._start()
        if not self.iam.allows(SECRET, MIGRATE):
            self.executions[execution].denied = (
                f"Task {execution.rsplit('/', 1)[-1]}-task0 failed: spec.template.spec.containers[0]"
                f".env[0].value_from.secret_key_ref.name: Permission denied on secret:"
                f" projects/p/secrets/{SECRET}/versions/1 for Revision service account"
                f" {MIGRATE.removeprefix('serviceAccount:')}. The service account used must be granted"
                " the 'Secret Manager Secret Accessor' role (roles/secretmanager.secretAccessor) at"
                " the secret, project or higher level."
            )
        return Reply(
            200,
            {
                "name": "projects/p/locations/europe-west1/operations/op-1",
                "metadata": {"name": execution},
                "done": False,
            },
        )

    def _start(self) -> str:
        execution = f"{JOB}/executions/liftoff-prod-migrate-{len(self.executions) + 1:05d}"
        self.executions[execution] = Run()
        return execution

    def _list(self) -> dict[str, Any]:
        return {"executions": [self._state(name) for name in self.executions]}

    def _poll(self, name: str) -> dict[str, Any]:
        self.executions[name].polls += 1
        return self._state(name)

    def _state(self, name: str) -> dict[str, Any]:
        run = self.executions[name]
        body: dict[str, Any] = {"name": name, "taskCount": 1, "logUri": "https://logs"}
        if run.denied:
            body |= {"completionTime": "2026-11-24T05:00:00Z", "failedCount": 1}
            body["conditions"] = [{"type": "Completed", "state": "CONDITION_FAILED", "message": run.denied}]
        elif run.cancelled:
            body |= {"completionTime": "2026-11-24T05:00:00Z", "cancelledCount": 1}
        elif run.polls >= self.polls_until_done:
            body["completionTime"] = "2026-11-24T05:00:00Z"
            body["succeededCount" if self.succeed else "failedCount"] = 1
        return body


@pytest.fixture
def api() -> Iterator[RunApi]:
    state = RunApi()
    with serve_json(state) as served:
        state.url = served.url
        yield state


def provider(api: RunApi, slept: list[float] | None = None, **options: Any) -> JobRunProvider:
    """The provider on the model's clock: each wait it makes moves the control planes' time on."""
    record: list[float] = [] if slept is None else slept

    def sleep(seconds: float) -> None:
        record.append(seconds)
        api.iam.wait(seconds)

    return JobRunProvider(
        endpoint=api.url,
        token=lambda: TOKEN,
        poll_seconds=5.0,
        sleep=sleep,
        clock=lambda: api.iam.now,
        **options,
    )


def outs(result: Any) -> dict[str, Any]:
    assert result.outs is not None
    return dict(result.outs)


PROPS = {"job": JOB, "trigger": "sha256:aa", "timeout_seconds": 60}


def test_create_runs_the_job_and_waits_for_success(api):
    result = provider(api).create(dict(PROPS))
    (execution,) = api.executions
    assert result.id == execution
    assert outs(result)["execution"] == execution
    assert api.executions[execution].polls == 2, "polled until completion"
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


def test_a_refusal_other_than_iam_is_not_retried(api):
    api.refuse_with = 401
    with pytest.raises(JobRunError, match="401"):
        provider(api).create(dict(PROPS))
    assert [r[:2] for r in api.requests if r[0] == "POST"] == [("POST", f"/v2/{JOB}:run")]


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
    assert [r[:2] for r in api.requests if r[0] == "POST"] == [("POST", f"/v2/{JOB}:run")]


def test_an_execution_past_its_time_is_cancelled_before_failing(api):
    api.polls_until_done = 10**6
    with pytest.raises(JobRunError, match="did not finish in time: it was cancelled"):
        provider(api).create({**PROPS, "timeout_seconds": 60})
    assert api.cancelled == list(api.executions)
    # Its time and the margin for scheduling and starting, and no more.
    assert 60 + START_MARGIN_SECONDS - 5 <= api.iam.now <= 60 + START_MARGIN_SECONDS


def test_the_token_is_not_pickled_with_the_provider():
    from components.googleapi import GoogleToken

    token = GoogleToken()
    token._credentials = object()  # as if it had fetched credentials
    blob = serialize_provider(JobRunProvider(token=token))
    restored = dill.loads(base64.b64decode(blob))  # noqa: S301 (bytes made just above)
    assert restored.token._credentials is None


# IAM propagation (RULES["iam-propagation"] in tests/stacks/cloud.py) --------------------------


@pytest.mark.parametrize("delay", [0.0, 120.0, PROPAGATION_SECONDS - 30.0])
def test_a_secret_grant_still_propagating_is_waited_for(api, delay):
    """The migrate account's access to its secrets, granted moments before in the same update."""
    api.iam.delay = delay
    api.iam.granted[(ACT_AS, DEPLOYER)] = -delay  # the bootstrap's, long effective
    result = provider(api).create(dict(PROPS))
    executions = list(api.executions)
    assert outs(result)["execution"] == executions[-1]
    assert all(api.executions[name].denied for name in executions[:-1])
    assert api.executions[executions[-1]].denied is None
    assert api.iam.now >= delay, "nothing ran before the grant took effect"
    assert api.iam.now < delay + 90, "and it ran soon after"


def test_a_secret_grant_that_never_takes_effect_fails_naming_it(api):
    api.iam.delay = PROPAGATION_SECONDS + 3600
    api.iam.granted[(ACT_AS, DEPLOYER)] = -api.iam.delay
    with pytest.raises(JobRunError) as failed:
        provider(api).create(dict(PROPS))
    message = str(failed.value)
    assert MIGRATE.removeprefix("serviceAccount:") in message
    assert f"projects/p/secrets/{SECRET}/versions/1" in message
    assert "secretmanager.secretAccessor" in message
    assert "https://cloud.google.com/iam/docs/access-change-propagation" in message
    # Given up once the documented window has passed since the first refusal, not long after.
    assert PROPAGATION_SECONDS <= api.iam.now <= PROPAGATION_SECONDS + 60


def test_running_as_an_account_the_deployer_may_not_act_as_yet_is_retried(api):
    api.iam.delay = 100.0
    api.iam.granted[(SECRET, MIGRATE)] = -100.0
    provider(api).create(dict(PROPS))
    runs = [r[:2] for r in api.requests if r[0] == "POST"]
    assert len(runs) > 1 and len(api.executions) == 1, "refused runs started nothing"


def test_a_refused_run_beyond_the_window_names_the_permission(api):
    api.refuse_with = 403
    with pytest.raises(JobRunError, match=r"iam.serviceAccountUser .*Still refused after 4[2-9]\ds"):
        provider(api).create(dict(PROPS))
    assert not api.executions


# Cancellation and leftovers -------------------------------------------------------------------


def test_a_leftover_running_execution_is_waited_for_before_another_starts(api):
    leftover = api.leave_running()
    result = provider(api).create(dict(PROPS))
    ours = outs(result)["execution"]
    assert ours != leftover
    assert api.executions[leftover].polls >= api.polls_until_done, "it finished first"
    first_run = next(i for i, r in enumerate(api.requests) if r[:2] == ("POST", f"/v2/{JOB}:run"))
    last_leftover_poll = max(i for i, r in enumerate(api.requests) if r[1] == f"/v2/{leftover}")
    assert last_leftover_poll < first_run
    assert api.cancelled == []


def test_a_leftover_that_outlasts_its_time_is_cancelled_and_nothing_new_starts(api):
    leftover = api.leave_running()
    api.polls_until_done = 10**6
    with pytest.raises(JobRunError, match=f"{leftover} did not finish in time: it was cancelled"):
        provider(api).create(dict(PROPS))
    assert api.cancelled == [leftover]
    assert list(api.executions) == [leftover]


def test_a_shutdown_while_waiting_cancels_the_execution(api):
    api.polls_until_done = 10**6
    polls: list[float] = []

    def stopping() -> bool:
        polls.append(api.iam.now)
        return len(polls) > 3

    with pytest.raises(JobRunError, match="the deploy was cancelled while .*00001 ran: it was cancelled"):
        provider(api, stopping=stopping).create(dict(PROPS))
    assert api.cancelled == list(api.executions)


def test_a_shutdown_while_waiting_for_a_leftover_leaves_it_and_starts_nothing(api):
    leftover = api.leave_running()
    api.polls_until_done = 10**6
    with pytest.raises(JobRunError, match="left to finish"):
        provider(api, stopping=lambda: api.iam.now > 20).create(dict(PROPS))
    assert api.cancelled == []
    assert list(api.executions) == [leftover]


@pytest.fixture
def dynamic_host(repo_root: Path) -> Iterator[tuple[subprocess.Popen[str], ResourceProviderStub]]:
    """Pulumi's Python dynamic-provider host, started as the CLI starts it: `python -u -m
    pulumi.dynamic` (sdk/python/dist/pulumi-resource-pulumi-python) in a process group of its own
    (cmdutil.RegisterProcessGroup), announcing its gRPC port on stdout."""
    host = subprocess.Popen(
        [sys.executable, "-u", "-m", "pulumi.dynamic"],
        cwd=repo_root,
        env={**os.environ, "PYTHONPATH": str(repo_root)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert host.stdout is not None
        port = int(host.stdout.readline())
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = ResourceProviderStub(channel)
            stub.Configure(provider_pb2.ConfigureRequest(acceptSecrets=False))
            yield host, stub
    finally:
        if host.poll() is None:
            os.killpg(host.pid, signal.SIGKILL)
        host.wait()


def test_a_terminated_deploy_cancels_the_execution_it_waited_for(api, dynamic_host):
    """`pulumi up` stopped by a second Ctrl-C closes each plugin by interrupting its process group,
    and kills it 5 s later (pulumi sdk/go/common/resource/plugin/plugin.go, Kill); the dynamic
    host's Cancel does nothing. Within those 5 s the running execution is cancelled."""
    host, stub = dynamic_host
    api.polls_until_done = 10**6
    runner = JobRunProvider(endpoint=api.url, token=functools.partial(str, TOKEN), poll_seconds=0.2)
    props = {"__provider": serialize_provider(runner), **PROPS}
    request = provider_pb2.CreateRequest(
        urn="urn:pulumi:prod::liftoff::pulumi-python:dynamic/liftoff:JobRun::migrations-run",
        properties=asyncio.run(rpc.serialize_properties(props, {})),
    )
    created = stub.Create.future(request)
    deadline = time.monotonic() + 30
    while not any(run.polls >= 2 for run in api.executions.values()):
        assert time.monotonic() < deadline and not created.done(), "the execution was never waited for"
        time.sleep(0.05)
    os.killpg(host.pid, signal.SIGINT)
    host.wait(timeout=5)
    assert api.cancelled == list(api.executions)
    assert host.stderr is not None and "KeyboardInterrupt" not in host.stderr.read()
