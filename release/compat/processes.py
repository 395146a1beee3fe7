"""The processes a check runs (one tree's API or worker, on its own port) and the smoke suite's
client to the API, each failed check a StepFailed."""

from __future__ import annotations

import re
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from app.local.servers import LOOPBACK, stop_process

READY_SECONDS = 30.0
# A job takes 0.3 s here: one that has not ended in 10 s is stuck.
JOB_SECONDS = 10.0
STOP_SECONDS = 10.0
ERROR_LINE = re.compile(r"\b\w*(Error|Exception|Violation)\b")
MODEL = "compat-model"


class StepFailed(Exception):
    """A smoke step's check did not hold; the message is the finding's error."""


# --- processes -------------------------------------------------------------------------------------


@dataclass
class Process:
    """`python -m app api|worker` of one tree, on its own port, logging to a file."""

    name: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path
    ready_path: str

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}{self.ready_path}", timeout=2) as response:  # noqa: S310
                return bool(response.status == 200)
        except OSError:
            return False

    def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_SECONDS
        while not self.ready():
            if self.process.poll() is not None:
                raise StepFailed(f"{self.name} exited with {self.process.returncode}: {self.tail()}")
            if time.monotonic() > deadline:
                raise StepFailed(f"{self.name} not ready after {READY_SECONDS:.0f}s: {self.tail()}")
            time.sleep(0.1)

    def tail(self, lines: int = 4) -> str:
        try:
            text = self.log.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return " | ".join(line.strip()[:300] for line in text[-lines:])

    def last_error(self) -> str:
        """The last line of the log that names an error (a traceback's last line), else its tail."""
        try:
            lines = self.log.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        for line in reversed(lines):
            if ERROR_LINE.search(line):
                return line.strip()[:400]
        return self.tail(2)

    def stop(self) -> None:
        stop_process(self.process, STOP_SECONDS)


# --- the API client of the smoke suite ---------------------------------------------------------------


class Client:
    """The demo tenant's calls to one API process."""

    def __init__(self, api: Process, token: str) -> None:
        self.api = api
        self.http = httpx.Client(base_url=api.url, headers={"Authorization": f"Bearer {token}"}, timeout=10.0)

    def _short(self, response: httpx.Response) -> str:
        """The status and the body; for a 5xx, the error the API's log gives for it."""
        text = f"HTTP {response.status_code} {response.text.strip()[:300]}"
        if response.status_code >= 500:
            time.sleep(0.2)  # the log line may follow the response
            text += f"; API log: {self.api.last_error()}"
        return text

    def close(self) -> None:
        self.http.close()

    def submit(self, prompt: str, key: str | None = None) -> dict[str, Any]:
        headers = {"Idempotency-Key": key} if key else {}
        response = self.http.post("/v1/generations", json={"prompt": prompt, "model": MODEL}, headers=headers)
        if response.status_code != 202:
            raise StepFailed(f"POST /v1/generations: {self._short(response)}")
        return dict(response.json())

    def get(self, job_id: str) -> dict[str, Any]:
        response = self.http.get(f"/v1/generations/{job_id}")
        if response.status_code != 200:
            raise StepFailed(f"GET /v1/generations/{job_id}: {self._short(response)}")
        return dict(response.json())

    def list_ids(self, status: str | None = None) -> set[str]:
        """Every job id the tenant has (following the cursors), optionally of one status."""
        ids: set[str] = set()
        params: dict[str, str | int] = {"limit": 100}
        if status:
            params["status"] = status
        for _ in range(50):
            response = self.http.get("/v1/generations", params=params)
            if response.status_code != 200:
                raise StepFailed(
                    f"GET /v1/generations?{'status=' + status if status else ''}: {self._short(response)}"
                )
            page = response.json()
            ids |= {item["id"] for item in page["items"]}
            if not page.get("next_cursor"):
                break
            params["cursor"] = page["next_cursor"]
        return ids

    def cancel(self, job_id: str) -> dict[str, Any]:
        response = self.http.post(f"/v1/generations/{job_id}/cancel")
        if response.status_code not in (200, 202):
            raise StepFailed(f"POST /v1/generations/{job_id}/cancel: {self._short(response)}")
        job = dict(response.json())
        if not (job["status"] == "cancelled" or job["cancel_requested"]):
            raise StepFailed(f"cancel answered {response.status_code} but the job is {job['status']}")
        return job

    def wait_terminal(self, job_id: str, worker: Process, timeout: float = JOB_SECONDS) -> dict[str, Any]:
        """The job once it has ended, however it ended."""
        deadline = time.monotonic() + timeout
        job = self.get(job_id)
        while job["status"] not in ("succeeded", "failed", "cancelled"):
            if time.monotonic() > deadline:
                raise StepFailed(
                    f"job {job_id} still {job['status']} after {timeout:.0f}s;"
                    f" worker log: {worker.last_error()}"
                )
            time.sleep(0.1)
            job = self.get(job_id)
        return job

    def wait_status(
        self, job_id: str, wanted: str, worker: Process, timeout: float = JOB_SECONDS
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        job = self.get(job_id)
        while job["status"] != wanted:
            if job["status"] in ("succeeded", "failed", "cancelled"):
                raise StepFailed(
                    f"job {job_id} ended {job['status']}, not {wanted}: error {job.get('error')!r};"
                    f" worker log: {worker.last_error()}"
                )
            if time.monotonic() > deadline:
                raise StepFailed(
                    f"job {job_id} still {job['status']} after {timeout:.0f}s (attempts {job['attempts']},"
                    f" error {job.get('error')!r}); worker log: {worker.last_error()}"
                )
            time.sleep(0.1)
            job = self.get(job_id)
        return job
