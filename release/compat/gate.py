"""Does the code at BASE still work on the schema HEAD's migrations produce?

A release migrates first and moves traffic after: from then on the stable revision, and every
revision a rollback could return to, runs on the new schema. This gate checks that on this
machine, with the real processes:

1. one local Postgres and Redis; BASE's tree (`git archive` of the commit: its `app/`, run with
   its own locked dependencies) migrates an empty database with its own migrations;
2. BASE's API and worker write data: jobs submitted, processed, cancelled, retried;
3. that database is kept as a template: each check copies it (`CREATE DATABASE ... TEMPLATE`),
   so one preparation serves several HEADs (`CompatSession.check`);
4. BASE's API and worker run on the copy while HEAD's expand migrations are applied, one by
   one (contract migrations are held, as a release holds them); a migration that fails on
   BASE's data is a finding;
5. BASE's API and worker then go through the smoke suite: read and list what they wrote
   before, submit, process to `succeeded`, read, list, cancel, idempotent retry;
6. HEAD's API and worker read what BASE wrote, and write a job that BASE's API then reads.

Compatible: exit 0; a finding: exit 3, naming the migrations, the failing step and its error.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any
from uuid import uuid4

import asyncpg
import httpx
import redis
from sqlalchemy.exc import SQLAlchemyError

from app.local.bootstrap import seed_tenants
from app.local.config import TENANTS
from app.local.servers import (
    LOOPBACK,
    LocalPostgres,
    LocalRedis,
    ServerError,
    free_port,
    private_dir,
    stop_process,
)
from app.local.token import mint_dev_token

ROOT = Path(__file__).resolve().parents[2]
EXIT_COMPATIBLE = 0
EXIT_GATE_FAILED = 1
EXIT_USAGE = 2
EXIT_INCOMPATIBLE = 3
LOCK = Path("app/requirements.lock")
MIGRATIONS = Path("app/migrations/versions")
# Where BASE's own dependencies are installed, once per lock file (by its sha256).
VENV_CACHE = ROOT / ".local" / "compat" / "venvs"
READY_SECONDS = 30.0
# A job takes 0.3 s here: one that has not ended in 10 s is stuck.
JOB_SECONDS = 10.0
MIGRATE_SECONDS = 60.0
STOP_SECONDS = 10.0
# The variables the gate sets itself: a shell that sourced .local/dev.env must not point the
# gate's processes at `make dev`'s servers, nor PYTHONPATH at another tree's `app`.
OWN_VARIABLES = (
    "DATABASE_URL",
    "MIGRATIONS_DATABASE_URL",
    "REDIS_URL",
    "SUPABASE_JWT_SECRET",
    "PORT",
    "PYTHONPATH",
)
BASE_DB = "compat_base"
ERROR_LINE = re.compile(r"\b\w*(Error|Exception|Violation)\b")
MODEL = "compat-model"


class UsageError(ValueError):
    """The gate was asked something it cannot check: a ref git does not know, a missing tree."""


class GateError(RuntimeError):
    """The gate itself failed (a server did not start, BASE could not be prepared)."""


@dataclass(frozen=True)
class MigrationRef:
    """A migration HEAD adds over BASE."""

    revision: str
    file: str
    phase: str

    def __str__(self) -> str:
        return f"{self.revision} ({self.file}, {self.phase})"


@dataclass(frozen=True)
class Finding:
    """One way the old code fails on the new schema."""

    # "migrate", "base.<step>" (BASE's code on the migrated schema), "head.<step>" (HEAD's code
    # on what BASE wrote) or "base.read-head" (BASE's code on what HEAD wrote).
    step: str
    error: str
    # The migrations concerned: the one that failed, or all those applied before the step.
    migrations: tuple[str, ...] = ()


@dataclass
class CompatReport:
    """What one check found; `exit_code` is what `make compat` exits with."""

    base: str
    base_commit: str
    head: str
    migrations: list[MigrationRef] = field(default_factory=list)
    held: list[MigrationRef] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    steps: list[str] = field(default_factory=list)
    seconds: float = 0.0
    # Set when the gate itself failed: nothing is known about compatibility then.
    error: str | None = None

    @property
    def compatible(self) -> bool:
        return self.error is None and not self.findings

    @property
    def exit_code(self) -> int:
        if self.error is not None:
            return EXIT_GATE_FAILED
        return EXIT_INCOMPATIBLE if self.findings else EXIT_COMPATIBLE

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["compatible"] = self.compatible
        data["exit_code"] = self.exit_code
        return data

    def text(self) -> str:
        verdict = "gate failed" if self.error else "compatible" if self.compatible else "INCOMPATIBLE"
        lines = [
            f"compat: BASE {self.base} ({self.base_commit[:12]}) on HEAD {self.head}'s schema: {verdict}"
        ]
        applied = ", ".join(map(str, self.migrations)) or "none (no schema change)"
        lines.append(f"  migrations applied over BASE's schema: {applied}")
        if self.held:
            lines.append(
                "  contract migrations held, as a release holds them until no rollback target needs"
                f" the old schema: {', '.join(map(str, self.held))}"
            )
        for finding in self.findings:
            names = ", ".join(self._file_of(rev) for rev in finding.migrations) or "-"
            lines.append(f"  FAIL {finding.step} (migrations: {names}): {finding.error}")
        if self.error:
            lines.append(f"  error: {self.error}")
        elif self.compatible:
            lines.append(f"  passed: {', '.join(self.steps)}")
        lines.append(f"  took {self.seconds:.1f}s")
        return "\n".join(lines)

    def _file_of(self, revision: str) -> str:
        return next((f"{m.revision} ({m.file})" for m in self.migrations if m.revision == revision), revision)


class StepFailed(Exception):
    """A smoke step's check did not hold; the message is the finding's error."""


# --- source trees and their interpreters ----------------------------------------------------------


def _git(root: Path, *args: str) -> str:
    result = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=False)  # noqa: S603,S607
    if result.returncode != 0:
        raise UsageError(f"git {' '.join(args)}: {result.stderr.strip() or result.stdout.strip()}")
    return result.stdout.strip()


def resolve(root: Path, ref: str) -> str:
    """The commit `ref` names in the repository at `root`; UsageError if it names none."""
    if not ref or ref.startswith("-"):
        raise UsageError(f"{ref!r} is not a git ref")
    try:
        return _git(root, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    except UsageError:
        raise UsageError(f"{ref!r} names no commit of the repository at {root}") from None


def export(root: Path, commit: str, into: Path) -> Path:
    """The app of `commit` (its `app/` and `pyproject.toml`) written to `into`, as a worktree
    of that commit holds them, without adding a worktree to the repository."""
    archive = subprocess.run(  # noqa: S603
        ["git", "archive", "--format=tar", commit, "app", "pyproject.toml"],  # noqa: S607
        cwd=root,
        capture_output=True,
        check=False,
    )
    if archive.returncode != 0:
        raise UsageError(f"git archive {commit}: {archive.stderr.decode().strip()}")
    into.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(into, filter="data")
    return into


def interpreter(tree: Path, *, cache: Path = VENV_CACHE, current: Path = ROOT) -> str:
    """The Python that runs `tree`'s app with its own locked dependencies: this one when the
    lock is byte-identical to `current`'s, else a virtualenv built once from the lock."""
    lock = (tree / LOCK).read_bytes()
    if (current / LOCK).is_file() and (current / LOCK).read_bytes() == lock:
        return sys.executable
    venv = cache / hashlib.sha256(lock).hexdigest()
    python = venv / "bin" / "python"
    if (venv / ".installed").is_file():
        return str(python)
    shutil.rmtree(venv, ignore_errors=True)
    venv.parent.mkdir(parents=True, exist_ok=True)
    for command in (
        [sys.executable, "-m", "venv", str(venv)],
        [str(python), "-m", "pip", "install", "--quiet", "--require-hashes", "-r", str(tree / LOCK)],
    ):
        result = subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603
        if result.returncode != 0:
            raise GateError(f"could not install BASE's locked dependencies: {result.stderr.strip()[-800:]}")
    (venv / ".installed").touch()
    return str(python)


def migrations_digest(tree: Path) -> str:
    """A digest of the migration files: equal digests, equal schemas."""
    digest = hashlib.sha256()
    for path in sorted((tree / MIGRATIONS).glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


@dataclass(frozen=True)
class Tree:
    """A source tree of the app and the interpreter that runs it."""

    label: str
    path: Path
    python: str


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


# --- the session ---------------------------------------------------------------------------------------


@dataclass
class Written:
    """What one side's code wrote: job ids and the status each one ended in."""

    jobs: dict[str, str] = field(default_factory=dict)


MIGRATE_SCRIPT = """
import json, sys
from alembic import command
from app.migrate import Phase, alembic_config, current_revision, migrations, pending

def out(**event):
    print("COMPAT " + json.dumps(event), flush=True)

dsn = sys.argv[1]
# Contract migrations a release lets run (python -m app migrate --allow-contract); the rest held.
allowed = set(json.loads(sys.argv[2])) if len(sys.argv) > 2 else set()
try:
    found = migrations()
    current = current_revision(dsn)
    todo = pending(found, current)
except Exception as exc:
    out(event="failed", revision=None, error=f"{type(exc).__name__}: {exc}")
    sys.exit(0)
held = False
for m in todo:
    held = held or (m.phase is Phase.CONTRACT and m.revision not in allowed)
    out(event="planned", revision=m.revision, file=m.name, phase=m.phase.value, held=held)
for m in todo:
    if m.phase is Phase.CONTRACT and m.revision not in allowed:
        break
    try:
        command.upgrade(alembic_config(dsn), m.revision)
    except Exception as exc:
        out(event="failed", revision=m.revision, error=f"{type(exc).__name__}: {exc}")
        sys.exit(0)
    out(event="applied", revision=m.revision)
"""


class CompatSession:
    """One local Postgres and Redis, and BASE prepared once: its schema and the data its code
    wrote, kept as a template database that each `check` copies."""

    def __init__(
        self,
        base: str,
        *,
        root: Path = ROOT,
        workdir: Path | None = None,
        applied_contract: Collection[str] = (),
    ) -> None:
        self.root = root.resolve()
        self.base_ref = base
        # Contract migrations the real database has run: BASE's schema includes those of them its
        # tree has, as the database BASE's code serves does, and every check applies them.
        self.applied_contract = tuple(applied_contract)
        self.base_commit = resolve(self.root, base)
        self._own_workdir = workdir is None
        self.workdir = Path(tempfile.mkdtemp(prefix="liftoff-compat-")) if workdir is None else workdir
        self.secret = secrets.token_urlsafe(48)
        self.postgres = LocalPostgres(self.workdir / "postgres", free_port(), durable=False)
        self.redis = LocalRedis(self.workdir / "redis", free_port(), durable=False)
        self.logs = private_dir(self.workdir / "logs")
        self._handles: list[IO[bytes]] = []
        self._processes: list[Process] = []
        self._checks = 0
        self.base: Tree | None = None
        self.base_written = Written()
        self.prepared_seconds = 0.0

    # -- lifecycle

    def __enter__(self) -> CompatSession:
        self.prepare()
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def prepare(self) -> None:
        """Servers up, BASE's schema migrated by BASE's code, BASE's data written by its API and
        worker; GateError when any of that fails."""
        started = time.perf_counter()
        try:
            tree = export(self.root, self.base_commit, self.workdir / "base")
            self.base = Tree(
                f"{self.base_ref} ({self.base_commit[:12]})", tree, interpreter(tree, current=self.root)
            )
            self.postgres.start(stdout=self._log("postgres"), stderr=subprocess.STDOUT)
            self.redis.start(stdout=self._log("redis"), stderr=subprocess.STDOUT)
            asyncio.run(self._sql("postgres", f"CREATE DATABASE {BASE_DB}"))
            dsn = self.postgres.dsn(BASE_DB)
            result = subprocess.run(  # noqa: S603
                [
                    self.base.python,
                    "-m",
                    "app",
                    "migrate",
                    *_allow_flags(self.base.path, self.applied_contract),
                ],
                cwd=self.base.path,
                env=self._env(dsn, 8080, self.redis.url()),
                capture_output=True,
                text=True,
                check=False,
            )
            if result.returncode != 0:
                raise GateError(f"BASE's own migrations failed on an empty database: {result.stderr[-800:]}")
            asyncio.run(seed_tenants(dsn, ["demo"]))
            with self._running(self.base, dsn, self.redis.url(), "prepare") as (api, worker):
                client = Client(api, self._token())
                try:
                    self.base_written = self._write(client, worker, "base")
                finally:
                    client.close()
        except StepFailed as exc:
            self.close()
            raise GateError(f"BASE's code could not write its data on its own schema: {exc}") from exc
        except (
            ServerError,
            OSError,
            subprocess.SubprocessError,
            asyncpg.PostgresError,
            SQLAlchemyError,
        ) as exc:
            self.close()
            raise GateError(f"could not prepare BASE: {exc}") from exc
        except BaseException:
            self.close()
            raise
        self.prepared_seconds = time.perf_counter() - started

    def close(self) -> None:
        """Stop every process the session started and remove its directory."""
        for process in reversed(self._processes):
            with suppress(OSError):
                process.stop()
        self._processes.clear()
        for server in (self.redis, self.postgres):
            with suppress(OSError, ServerError):
                server.stop()
        for handle in self._handles:
            handle.close()
        self._handles.clear()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    # -- one check

    def check(
        self, head: Path | None = None, *, label: str | None = None, allow_contract: Collection[str] = ()
    ) -> CompatReport:
        """BASE's code on the schema `head`'s expand migrations make of BASE's (a source tree;
        None: this repository's working tree), and the contract migrations in `allow_contract`
        too; never raises for an incompatibility."""
        if self.base is None:
            raise GateError("prepare() the session first")
        started = time.perf_counter()
        head_path = (head or self.root).resolve()
        if not (head_path / MIGRATIONS).is_dir():
            raise UsageError(f"{head_path} holds no {MIGRATIONS}")
        report = CompatReport(
            base=self.base_ref,
            base_commit=self.base_commit,
            head=label or ("working tree" if head is None else str(head_path)),
        )
        try:
            head_tree = Tree(report.head, head_path, interpreter(head_path, current=self.root))
            allowed = tuple(dict.fromkeys((*self.applied_contract, *allow_contract)))
            self._check(self.base, head_tree, report, allowed)
        except (
            ServerError,
            OSError,
            subprocess.SubprocessError,
            asyncpg.PostgresError,
            GateError,
            StepFailed,
        ) as exc:
            report.error = f"{type(exc).__name__}: {exc}"
        finally:
            for process in reversed(self._processes):
                process.stop()
            self._processes.clear()
        report.seconds = time.perf_counter() - started + (self.prepared_seconds if self._checks == 1 else 0.0)
        return report

    def _check(self, base: Tree, head: Tree, report: CompatReport, allow_contract: tuple[str, ...]) -> None:
        self._checks += 1
        database = f"compat_{self._checks}"
        asyncio.run(self._sql("postgres", f"CREATE DATABASE {database} TEMPLATE {BASE_DB}"))
        dsn = self.postgres.dsn(database)
        redis_url = self.redis.url()
        redis.Redis.from_url(redis_url).flushdb()
        token = self._token()
        base_api = self._spawn(base, "api", dsn, redis_url, f"base-api-{self._checks}")
        base_worker = self._spawn(base, "worker", dsn, redis_url, f"base-worker-{self._checks}")
        for process in (base_api, base_worker):
            process.wait_ready()
        # BASE serves while the migrations run, as the stable revision does during a release.
        applied = self._migrate(head, dsn, report, allow_contract)
        if applied is None:
            return
        base_client = Client(base_api, token)
        try:
            self._smoke(base_client, base_worker, report, applied)
            base_worker.stop()
            head_api = self._spawn(head, "api", dsn, redis_url, f"head-api-{self._checks}")
            head_worker = self._spawn(head, "worker", dsn, redis_url, f"head-worker-{self._checks}")
            for process in (head_api, head_worker):
                try:
                    process.wait_ready()
                except StepFailed as exc:
                    report.findings.append(Finding(f"head.{process.name}", str(exc), applied))
                    return
            head_client = Client(head_api, token)
            try:
                self._step(
                    report, "head.read-base", applied, lambda: self._read(head_client, self.base_written)
                )
                head_written: Written | None = None

                def head_writes() -> None:
                    nonlocal head_written
                    head_written = self._write(head_client, head_worker, "head", full=False)

                self._step(report, "head.write", applied, head_writes)
                if head_written is not None:
                    written = head_written
                    self._step(report, "base.read-head", applied, lambda: self._read(base_client, written))
            finally:
                head_client.close()
        finally:
            base_client.close()

    def _migrate(
        self, head: Tree, dsn: str, report: CompatReport, allow_contract: tuple[str, ...] = ()
    ) -> tuple[str, ...] | None:
        """HEAD's expand migrations (and the contract ones allowed), one by one, with HEAD's code;
        the revisions applied, or None after a finding."""
        try:
            result = subprocess.run(  # noqa: S603
                [head.python, "-c", MIGRATE_SCRIPT, dsn, json.dumps(list(allow_contract))],
                cwd=head.path,
                env=self._env(dsn, 8080, self.redis.url()),
                capture_output=True,
                text=True,
                check=False,
                timeout=MIGRATE_SECONDS,
            )
        except subprocess.TimeoutExpired as exc:
            # A small database with BASE's processes mostly idle: a migration still running after
            # a minute is most likely waiting for a lock they hold, as it would behind traffic.
            output = (
                exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else exc.stdout or ""
            )
            started = [line for line in output.splitlines() if line.startswith("COMPAT ")]
            report.findings.append(
                Finding(
                    "migrate",
                    f"HEAD's migrations did not finish in {MIGRATE_SECONDS:.0f}s while BASE's code was"
                    " serving (waiting for a lock the old code holds?); last event:"
                    f" {started[-1] if started else 'none'}",
                )
            )
            return None
        events = [
            json.loads(line.removeprefix("COMPAT "))
            for line in result.stdout.splitlines()
            if line.startswith("COMPAT ")
        ]
        applied: list[str] = []
        for event in events:
            if event["event"] == "planned":
                ref = MigrationRef(event["revision"], event["file"], event["phase"])
                (report.held if event["held"] else report.migrations).append(ref)
            elif event["event"] == "applied":
                applied.append(event["revision"])
            elif event["event"] == "failed":
                revision = event["revision"]
                report.findings.append(
                    Finding(
                        "migrate",
                        f"HEAD's migration failed on BASE's schema and data: {_first_lines(event['error'])}",
                        (revision,) if revision else (),
                    )
                )
                return None
        if result.returncode != 0:
            raise GateError(f"HEAD's migration runner exited {result.returncode}: {result.stderr[-800:]}")
        report.steps.append("migrate")
        return tuple(applied)

    def _smoke(self, client: Client, worker: Process, report: CompatReport, applied: tuple[str, ...]) -> None:
        """BASE's code on the migrated schema: the steps in order; the first failure ends them."""
        key = f"compat-{uuid4()}"
        job: dict[str, Any] = {}

        def submit() -> None:
            job.update(client.submit("compat smoke: submitted on the new schema", key))

        def retry() -> None:
            again = client.submit("compat smoke: submitted on the new schema", key)
            if again["id"] != job["id"]:
                raise StepFailed(
                    f"the same Idempotency-Key made a second job {again['id']} (first {job['id']})"
                )

        def listed() -> None:
            missing = {job["id"], *self.base_written.jobs} - client.list_ids()
            if missing:
                raise StepFailed(f"GET /v1/generations does not list {sorted(missing)}")
            if job["id"] not in client.list_ids("succeeded"):
                raise StepFailed("GET /v1/generations?status=succeeded does not list the job that succeeded")

        def cancel() -> None:
            client.cancel(client.submit("compat smoke: cancelled on the new schema")["id"])

        # The cancelled job is submitted while the worker (one job at a time) runs the first.
        steps: list[tuple[str, Callable[[], object]]] = [
            ("base.read-own", lambda: self._read(client, self.base_written)),
            ("base.submit", submit),
            ("base.cancel", cancel),
            ("base.process", lambda: client.wait_status(job["id"], "succeeded", worker)),
            ("base.read", lambda: client.get(job["id"])),
            ("base.list", listed),
            ("base.idempotent-retry", retry),
        ]
        for name, step in steps:
            if not self._step(report, name, applied, step):
                return

    @staticmethod
    def _step(report: CompatReport, name: str, applied: tuple[str, ...], step: Callable[[], object]) -> bool:
        try:
            step()
        except StepFailed as exc:
            report.findings.append(Finding(name, str(exc), applied))
            return False
        except (httpx.HTTPError, KeyError, TypeError, ValueError) as exc:
            report.findings.append(Finding(name, f"{type(exc).__name__}: {exc}", applied))
            return False
        report.steps.append(name)
        return True

    def _write(self, client: Client, worker: Process, side: str, *, full: bool = True) -> Written:
        """Jobs in each state the code reaches: succeeded (with a key) and cancelled. The worker
        runs one job at a time, so the second job waits queued behind the first and its cancel
        is immediate."""
        written = Written()
        done = client.submit(f"compat: written by {side}", f"compat-{side}-{uuid4()}")
        if full:
            cancelled = client.cancel(client.submit(f"compat: cancelled by {side}")["id"])
            written.jobs[cancelled["id"]] = client.wait_terminal(cancelled["id"], worker)["status"]
        written.jobs[done["id"]] = client.wait_status(done["id"], "succeeded", worker)["status"]
        return written

    @staticmethod
    def _read(client: Client, written: Written) -> None:
        for job_id, status in written.jobs.items():
            job = client.get(job_id)
            if job["status"] != status:
                raise StepFailed(f"job {job_id} reads as {job['status']}, written as {status}")
        missing = set(written.jobs) - client.list_ids()
        if missing:
            raise StepFailed(f"GET /v1/generations does not list {sorted(missing)}")

    # -- helpers

    def _token(self) -> str:
        _, org_id, user_id = TENANTS["demo"]
        return mint_dev_token(self.secret, user_id=user_id, org_id=org_id)

    def _log(self, name: str) -> IO[bytes]:
        handle = (self.logs / f"{name}.log").open("ab")
        self._handles.append(handle)
        return handle

    def _env(self, dsn: str, port: int, redis_url: str) -> dict[str, str]:
        inherited = {
            k: v for k, v in os.environ.items() if k not in OWN_VARIABLES and not k.startswith("FAULT_")
        }
        return {
            **inherited,
            "APP_ENV": "local",
            "DATABASE_URL": dsn,
            "MIGRATIONS_DATABASE_URL": dsn,
            "REDIS_URL": redis_url,
            "SUPABASE_JWT_SECRET": self.secret,
            "HOST": LOOPBACK,
            "PORT": str(port),
            "LOG_FORMAT": "console",
            "LOG_LEVEL": "WARNING",
            "PYTHONUNBUFFERED": "1",
            # Long enough that a job can be cancelled while queued or running, short for the rest.
            "LOCAL_PROVIDER_LATENCY_MS": "300",
            "WORKER_MAX_ATTEMPTS": "2",
            "WORKER_CONCURRENCY": "1",
            "WORKER_RETRY_BASE_SECONDS": "0.2",
            "WORKER_SWEEP_SECONDS": "1",
            "WORKER_SHUTDOWN_GRACE_SECONDS": "1",
            "LIFTOFF_COMPAT_DIR": str(self.workdir),
        }

    def _spawn(self, tree: Tree, role: str, dsn: str, redis_url: str, name: str) -> Process:
        port = free_port()
        log = self.logs / f"{name}.log"
        handle = log.open("ab")
        self._handles.append(handle)
        process = subprocess.Popen(  # noqa: S603
            [tree.python, "-m", "app", role],
            cwd=tree.path,
            env=self._env(dsn, port, redis_url),
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
        spawned = Process(name, port, process, log, "/ready" if role == "api" else "/health")
        self._processes.append(spawned)
        return spawned

    @contextmanager
    def _running(self, tree: Tree, dsn: str, redis_url: str, name: str) -> Iterator[tuple[Process, Process]]:
        api = self._spawn(tree, "api", dsn, redis_url, f"{name}-api")
        worker = self._spawn(tree, "worker", dsn, redis_url, f"{name}-worker")
        try:
            api.wait_ready()
            worker.wait_ready()
            yield api, worker
        finally:
            for process in (worker, api):
                process.stop()
                self._processes.remove(process)

    async def _sql(self, database: str, statement: str) -> None:
        conn = await asyncpg.connect(self.postgres.dsn(database))
        try:
            await conn.execute(statement)
        finally:
            await conn.close()


def _first_lines(error: str, limit: int = 400) -> str:
    # SQLAlchemy's messages carry the statement and a link after the cause: the cause first.
    text = " ".join(line.strip() for line in error.splitlines() if line.strip() and "sqlalche.me" not in line)
    return text[:limit]


def check(
    base: str,
    *,
    head: Path | None = None,
    root: Path = ROOT,
    label: str | None = None,
    allow_contract: Collection[str] = (),
    applied_contract: Collection[str] = (),
) -> CompatReport:
    """One check of BASE (a git ref of `root`) against `head` (a source tree; None: `root`'s
    working tree), with the contract migrations the database has run (`applied_contract`) and
    those a release would let run (`allow_contract`) applied. UsageError for a ref git does not
    know; otherwise never raises: a gate that failed is a report with `error` set (exit 1)."""
    commit = resolve(root, base)
    try:
        session = CompatSession(base, root=root, applied_contract=applied_contract)
        session.prepare()
    except GateError as exc:
        return CompatReport(base=base, base_commit=commit, head=label or "working tree", error=str(exc))
    try:
        return session.check(head, label=label, allow_contract=allow_contract)
    finally:
        session.close()


def _allow_flags(tree: Path, revisions: Collection[str]) -> list[str]:
    """`--allow-contract` flags for BASE's own `migrate`, if its code knows them (a tree from
    before migration phases has no contract migration to hold, and no such flag)."""
    if not revisions or "--allow-contract" not in (tree / "app" / "__main__.py").read_text():
        return []
    return [f"--allow-contract={revision}" for revision in revisions]


def read_json(data: Mapping[str, Any]) -> CompatReport:
    """A report from its `to_json` form (what `--json` prints), for the controller."""
    return CompatReport(
        base=data["base"],
        base_commit=data["base_commit"],
        head=data["head"],
        migrations=[MigrationRef(**m) for m in data["migrations"]],
        held=[MigrationRef(**m) for m in data["held"]],
        findings=[Finding(f["step"], f["error"], tuple(f["migrations"])) for f in data["findings"]],
        steps=list(data["steps"]),
        seconds=float(data["seconds"]),
        error=data["error"],
    )
