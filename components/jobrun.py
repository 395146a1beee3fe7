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
  `taskCount` (https://cloud.google.com/run/docs/reference/rest/v2/projects.locations.jobs.executions).
"""

from __future__ import annotations

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


class JobRunError(Exception):
    """The execution failed, timed out, or the API refused to start it."""


class JobRunProvider(ResourceProvider):
    """Create and update run the job and wait; delete leaves the executions as history."""

    def __init__(
        self,
        endpoint: str = API,
        token: Callable[[], str] | None = None,
        poll_seconds: float = 5.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.token: Callable[[], str] = token or GoogleToken()
        self.poll_seconds = poll_seconds
        self.sleep = sleep

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

    def _run(self, props: Mapping[str, Any]) -> str:
        job = str(props["job"])
        # `timeout_seconds` covers every attempt of the execution (see MigrationsJob).
        deadline = time.monotonic() + float(props.get("timeout_seconds", 600)) + START_MARGIN_SECONDS
        with RestClient(self.endpoint, self.token, max_backoff_seconds=60.0, sleep=self.sleep) as api:
            try:
                operation = api.call("POST", f"/v2/{job}:run", json={}) or {}
                execution = str((operation.get("metadata") or {}).get("name") or "")
                if not execution:
                    raise JobRunError(f"{job}: the run operation named no execution: {operation}")
                self._wait(api, execution, deadline)
            except ApiError as error:
                raise JobRunError(str(error)) from error
        return execution

    def _wait(self, api: RestClient, execution: str, deadline: float) -> None:
        while True:
            state = api.call("GET", f"/v2/{execution}") or {}
            if state.get("completionTime"):
                succeeded = int(state.get("succeededCount") or 0)
                tasks = int(state.get("taskCount") or 1)
                if succeeded >= tasks:
                    return
                raise JobRunError(
                    f"{execution} failed ({succeeded} of {tasks} tasks succeeded): see its logs,"
                    f" {state.get('logUri', 'in Cloud Logging')}. Fix the cause and run `pulumi up`"
                    " again: the run is retried, and nothing that depends on it changed."
                )
            if time.monotonic() + self.poll_seconds > deadline:
                # Left running, it could overlap the run a retry starts: cancel it first.
                api.call("POST", f"/v2/{execution}:cancel", json={})
                raise JobRunError(f"{execution} did not finish in time and was cancelled")
            self.sleep(self.poll_seconds)


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
