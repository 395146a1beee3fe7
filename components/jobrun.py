"""JobRun: run a Cloud Run job to completion during `pulumi up`, again on every new trigger.

Why not the provider's `run_execution_token`: the execution is named `<job>-<token>`, and a failed
update still records the new token in state (the bridged provider returns partial state). A retry
of the same release then shows no diff and skips the run, or re-sends the token and collides
with the failed execution's name. This resource records nothing on failure: Pulumi keeps the old
state when a dynamic provider's create or update raises, so the retry runs again, and Cloud Run
names each execution itself.

The provider speaks the Cloud Run Admin API v2 over HTTPS:
- `POST v2/{job}:run` starts an execution and returns a long-running operation whose metadata
  is the Execution (https://cloud.google.com/run/docs/reference/rest/v2/projects.locations.jobs/run);
- `GET v2/{execution}` until `completionTime` is set; it succeeded when `succeededCount` reaches
  `taskCount` (https://cloud.google.com/run/docs/reference/rest/v2/projects.locations.jobs.executions);
- `GET v2/{job}/executions` lists the job's executions (.../projects.locations.jobs.executions/list);
- `POST v2/{execution}:cancel` cancels one (.../projects.locations.jobs.executions/cancel).

Around the run itself:
- IAM grants are eventually consistent: "typically 2 minutes, potentially 7 minutes or longer"
  (https://cloud.google.com/iam/docs/access-change-propagation), and a first deploy uses grants
  made minutes earlier (the migrate account's access to its secrets). A `:run` refused with 403,
  or an execution that failed because its account could not read a secret yet, is tried again
  with backoff for PROPAGATION_SECONDS after the first refusal; then the step fails naming the
  access that has not taken effect.
- An update cancelled or killed while it waited leaves its execution running. The next run
  finds it and waits for it before starting another (the migrations' own lock would make them
  take turns anyway, see app/migrations/env.py).
- When the engine shuts this provider's host down while it waits (a `pulumi up` terminated
  with a second Ctrl-C: the CLI closes each plugin by interrupting its process group, then kills
  it 5 s later; pulumi/pulumi sdk/go/common/resource/plugin/plugin.go, `Kill`), the execution is
  cancelled first. The host's own `Cancel` does nothing (pulumi/dynamic/__main__.py), and its
  main thread is the only one signals reach, so the shutdown is seen as the interpreter's
  (HostShutdown).
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, ReadResult, ResourceProvider, UpdateResult

from components.dynamic import DynamicResource
from components.googleapi import GoogleToken
from components.rest import ApiError, RestClient

API = "https://run.googleapis.com"
# Room for an execution to be scheduled and its container to start, beyond its own time limit.
START_MARGIN_SECONDS = 300
# How long access refused by IAM is taken for a grant still propagating: Google's documented
# "potentially 7 minutes" (https://cloud.google.com/iam/docs/access-change-propagation).
PROPAGATION_SECONDS = 7 * 60
PROPAGATION_DOC = "https://cloud.google.com/iam/docs/access-change-propagation"
# Cloud Run's condition when a workload's service account cannot read a secret it references, as it
# reports it for revisions ("...secret_key_ref.name: Permission denied on secret: projects/p/secrets/
# s/versions/3 for Revision service account a@p.iam.gserviceaccount.com. The service account used must
# be granted the 'Secret Manager Secret Accessor' role...": sourcegraph/sourcegraph-public-snapshot#59045,
# getsentry/eng-pipes#893); the words an execution's conditions carry are matched, not the whole text.
SECRET_DENIED = re.compile(
    r"Permission denied on secret:?\s*(?P<secret>[^\s]+?)\.?\s+for\s+(?:\w+\s+)?service account\s+"
    r"(?P<account>[^\s]+?)\.?(?:\s|$)",
    re.IGNORECASE,
)


class JobRunError(Exception):
    """The execution failed, timed out, or the API refused to start it."""


class HostShutdown:
    """Whether the process this provider runs in is shutting down, and a sleep that it cuts short.

    The dynamic provider host answers each call on a worker thread; a SIGINT reaches its main
    thread, which stops serving and returns, and the interpreter then joins the worker threads.
    Just before that join it calls the functions registered with `threading._register_atexit`
    (what concurrent.futures uses to stop its own workers), which is where this hears of it.
    Nothing of it is pickled: each process arms its own.
    """

    def __init__(self) -> None:
        self._arm()

    def _arm(self) -> None:
        self._event = threading.Event()
        register = getattr(threading, "_register_atexit", None)
        if register is None:  # another interpreter: no early warning, the run just is not cancelled
            return
        try:
            register(self._event.set)
        except RuntimeError:  # registering while the interpreter already shuts down
            self._event.set()

    def __getstate__(self) -> dict[str, Any]:
        return {"armed": False}  # not empty: an empty state would skip __setstate__

    def __setstate__(self, _state: dict[str, Any]) -> None:
        self._arm()

    def __call__(self) -> bool:
        return self._event.is_set()

    def sleep(self, seconds: float) -> None:
        self._event.wait(seconds)


class JobRunProvider(ResourceProvider):
    """Create and update run the job and wait; delete leaves the executions as history."""

    def __init__(
        self,
        endpoint: str = API,
        token: Callable[[], str] | None = None,
        poll_seconds: float = 5.0,
        sleep: Callable[[float], None] | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        stopping: Callable[[], bool] | None = None,
        propagation_seconds: float = PROPAGATION_SECONDS,
    ) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.token: Callable[[], str] = token or GoogleToken()
        self.poll_seconds = poll_seconds
        self.host = HostShutdown()
        # Tests give a clock and a sleep of their own; the host's sleep wakes up for a shutdown.
        self.sleep = sleep
        self.clock = clock
        self.stopping: Callable[[], bool] = stopping or self.host
        self.propagation_seconds = propagation_seconds

    def create(self, props: dict[str, Any]) -> CreateResult:
        execution = self._run(props)
        return CreateResult(id_=execution, outs={**props, "execution": execution})

    def update(self, _id: str, _olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        return UpdateResult(outs={**news, "execution": self._run(news)})

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        changed = [key for key in ("job", "trigger", "timeout_seconds") if olds.get(key) != news.get(key)]
        # Only a new trigger runs the job again; a moved job is another job, so it runs too.
        return DiffResult(changes=bool(changed), replaces=[], delete_before_replace=False)

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        return ReadResult(id_=id_, outs=props)

    def delete(self, _id: str, _props: dict[str, Any]) -> None:
        return None

    # Steps ----------------------------------------------------------------------------------

    def _run(self, props: Mapping[str, Any]) -> str:
        job = str(props["job"])
        # `timeout_seconds` covers every attempt of the execution (see MigrationsJob).
        budget = float(props.get("timeout_seconds", 600)) + START_MARGIN_SECONDS
        with RestClient(self.endpoint, self.token, max_backoff_seconds=60.0, sleep=self._pause) as api:
            try:
                for leftover in self._running(api, job):
                    pulumi.log.info(f"waiting for {leftover}, left running by an earlier update")
                    self._finished(api, leftover, budget, own=False)
                return self._run_once_granted(api, job, budget)
            except ApiError as error:
                raise JobRunError(str(error)) from error

    def _running(self, api: RestClient, job: str) -> list[str]:
        """Executions of the job still running: left by an update that was cancelled or killed."""
        executions = api.pages(f"/v2/{job}/executions", "executions")
        return sorted(str(e["name"]) for e in executions if e.get("name") and not e.get("completionTime"))

    def _run_once_granted(self, api: RestClient, job: str, budget: float) -> str:
        """Start an execution and see it succeed, again while IAM may still be propagating."""
        refused_since: float | None = None
        attempt = 0
        while True:
            try:
                execution = self._start(api, job)
                denied = self._outcome(execution, self._finished(api, execution, budget, own=True))
            except ApiError as error:
                if error.status != 403:
                    raise
                denied = f"the deployer may not run {job} yet (run.jobs.run, and iam.serviceAccountUser on"
                denied += f" its service account): {error}"
            else:
                if denied is None:
                    return execution
            refused_since = self.clock() if refused_since is None else refused_since
            waited = self.clock() - refused_since
            if waited >= self.propagation_seconds:
                raise JobRunError(
                    f"{denied}. Still refused after {waited:.0f}s, longer than IAM changes take to"
                    f" propagate ({PROPAGATION_DOC}): the grant is missing, not late. Grant it and run"
                    " `pulumi up` again."
                )
            attempt += 1
            pulumi.log.warn(f"{job}: access refused, an IAM grant may still be propagating: {denied}")
            self._pause(min(5.0 * 2 ** (attempt - 1), 60.0, self.propagation_seconds - waited))
            self._check_stopping(job)

    def _start(self, api: RestClient, job: str) -> str:
        operation = api.call("POST", f"/v2/{job}:run", json={}) or {}
        execution = str((operation.get("metadata") or {}).get("name") or "")
        if not execution:
            raise JobRunError(f"{job}: the run operation named no execution: {operation}")
        return execution

    def _finished(self, api: RestClient, execution: str, budget: float, *, own: bool) -> dict[str, Any]:
        """The execution's state once it completes. Cancelled first if it outlasts `budget`, or
        (when this update started it) if the host shuts down while it runs."""
        deadline = self.clock() + budget
        while True:
            state: dict[str, Any] = api.call("GET", f"/v2/{execution}") or {}
            if state.get("completionTime"):
                return state
            if self.stopping():
                # Left running, it would go on after the deploy was cancelled.
                note = self._cancel(api, execution) if own else "left to finish"
                raise JobRunError(f"the deploy was cancelled while {execution} ran: {note}")
            if self.clock() + self.poll_seconds > deadline:
                # Left running, it could overlap the run a retry starts: cancel it first.
                raise JobRunError(f"{execution} did not finish in time: {self._cancel(api, execution)}")
            self._pause(self.poll_seconds)

    def _outcome(self, execution: str, state: Mapping[str, Any]) -> str | None:
        """None if the execution succeeded; what IAM refused if it could not read a secret yet."""
        succeeded = int(state.get("succeededCount") or 0)
        tasks = int(state.get("taskCount") or 1)
        if succeeded >= tasks:
            return None
        for condition in state.get("conditions") or []:
            found = SECRET_DENIED.search(str(condition.get("message") or ""))
            if found:
                return (
                    f"{execution} could not start: {found['account']} may not read {found['secret']}"
                    " yet (its roles/secretmanager.secretAccessor grant)"
                )
        raise JobRunError(
            f"{execution} failed ({succeeded} of {tasks} tasks succeeded): see its logs,"
            f" {state.get('logUri', 'in Cloud Logging')}. Fix the cause and run `pulumi up`"
            " again: the run is retried, and nothing that depends on it changed."
        )

    def _cancel(self, api: RestClient, execution: str) -> str:
        try:
            api.call("POST", f"/v2/{execution}:cancel", json={})
        except ApiError as error:
            return f"it could not be cancelled ({error}); cancel it in the console"
        return "it was cancelled"

    def _check_stopping(self, job: str) -> None:
        if self.stopping():
            raise JobRunError(f"the deploy was cancelled before {job} ran")

    def _pause(self, seconds: float) -> None:
        (self.sleep or self.host.sleep)(seconds)


class JobRun(DynamicResource, module="liftoff", name="JobRun"):
    """One completed execution of `job` for the current `trigger` (an image digest, say)."""

    TYPE: ClassVar[str] = "pulumi-python:dynamic/liftoff:JobRun"
    # What the provider reads and writes: a dynamic resource has no schema to check them against.
    PROPERTIES: ClassVar[frozenset[str]] = frozenset({"job", "trigger", "timeout_seconds", "execution"})

    execution: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        job: pulumi.Input[str],
        trigger: pulumi.Input[str],
        timeout_seconds: int,
        opts: pulumi.ResourceOptions | None = None,
        provider: JobRunProvider | None = None,
    ) -> None:
        props = {"job": job, "trigger": trigger, "timeout_seconds": timeout_seconds, "execution": None}
        super().__init__(provider or JobRunProvider(), name, props, opts)
