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
import json
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from uuid import uuid4

import asyncpg
import httpx
import redis
from sqlalchemy.exc import SQLAlchemyError

from app.local.bootstrap import seed_tenants
from app.local.config import TENANTS
from app.local.servers import LOOPBACK, LocalPostgres, LocalRedis, ServerError, free_port, private_dir
from app.local.token import mint_dev_token
from release.compat.processes import Client, Process, StepFailed
from release.compat.report import CompatReport, Finding, GateError, MigrationRef, UsageError
from release.compat.trees import MIGRATIONS, ROOT, Tree, export, interpreter, resolve

MIGRATE_SECONDS = 60.0
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
