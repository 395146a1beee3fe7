"""The local system a rehearsal runs on: PostgreSQL, Redis, API and worker processes of the real app.

Everything lives in its own directory (`.local/rehearsal` for the command, a temporary one in
the tests), on free loopback ports, with its own JWT secret, so that `make dev`'s data, ports
and tokens are never touched.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from app.core.probes import PROBE_ORGANIZATION_ID, PROBE_USER_ID
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
    wait_until,
)
from app.local.token import mint_dev_token
from app.migrate import apply_tenant_limits, upgrade
from app.settings import Settings
from components.image import source_hash
from components.traffic import revision_name

ROOT = Path(__file__).resolve().parents[2]
READY_SECONDS = 60.0
STOP_SECONDS = 10.0
# Revisions are named as the program names them in the cloud (components.traffic.revision_name):
# from what the image is built of (stacks/program.py's IMAGE_SOURCES) and from the rest of the
# template, here the release's generation and its fault settings.
IMAGE_SOURCES = ("pyproject.toml", "app")
API_SERVICE = "liftoff-local-api"
WORKER_POOL = "liftoff-local-worker"
# Variables the rehearsal sets itself: a developer's shell that sourced .local/dev.env must
# not point a rehearsal's API at `make dev`'s servers.
OWN_VARIABLES = ("DATABASE_URL", "MIGRATIONS_DATABASE_URL", "REDIS_URL", "SUPABASE_JWT_SECRET", "PORT")
# The limits a release's `migrate` writes (the settings' defaults would turn most of the load's
# submissions into 429s): the rehearsal's tenants are limited by nothing but the load's rate.
REHEARSAL_LIMITS = {"TENANT_MAX_ACTIVE_JOBS": "1000000", "TENANT_MAX_SUBMISSIONS_PER_MINUTE": "1000000"}
# Each worker instance: a few jobs at once, and the queue's timings in seconds rather than the
# cloud's minutes, so that a lease lost or a job given back at a shutdown plays out in a rehearsal.
WORKER_INSTANCE_ENV = {
    "WORKER_CONCURRENCY": "2",
    "WORKER_LEASE_SECONDS": "10",
    "WORKER_SWEEP_SECONDS": "1",
    "WORKER_WAIT_SECONDS": "2",
    "WORKER_SHUTDOWN_GRACE_SECONDS": "3",
    "WORKER_RETRY_BASE_SECONDS": "0.2",
    "WORKER_RETRY_MAX_SECONDS": "1",
}


@dataclass
class ApiProcess:
    """One API revision: `python -m app api` on its own port."""

    name: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path = field(repr=False)
    faults: Mapping[str, str] = field(default_factory=dict)
    # The source tree the revision runs (a release's own, when it ships other code).
    tree: Path = ROOT

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/ready", timeout=2) as response:  # noqa: S310 (loopback)
                return bool(response.status == 200)
        except OSError:
            return False

    def wait_ready(self) -> None:
        wait_until(self.ready, f"API revision {self.name} (log: {self.log})", READY_SECONDS, self.process)

    def stop(self) -> None:
        stop_process(self.process, STOP_SECONDS)


@dataclass
class WorkerProcess:
    """One instance of a worker revision: `python -m app worker`, its /health on its own port."""

    revision: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path = field(repr=False)

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{LOOPBACK}:{self.port}/health", timeout=2) as response:  # noqa: S310 (loopback)
                return bool(response.status == 200)
        except OSError:
            return False

    def wait_ready(self) -> None:
        wait_until(self.healthy, f"worker {self.revision} (log: {self.log})", READY_SECONDS, self.process)

    def terminate(self) -> None:
        """SIGTERM: the instance stops claiming, lets its jobs finish or gives them back, exits."""
        if self.process.poll() is None:
            self.process.terminate()

    def wait_stopped(self) -> None:
        """Until it has exited (SIGKILL after STOP_SECONDS); sends SIGTERM first if not yet told."""
        stop_process(self.process, STOP_SECONDS)


class LocalSystem:
    """PostgreSQL, Redis and any number of API revisions and worker instances; `stop` ends every
    process it started."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.secret = secrets.token_urlsafe(48)
        self.postgres = LocalPostgres(self.root / "postgres", free_port(), durable=False)
        self.redis = LocalRedis(self.root / "redis", free_port(), durable=False)
        self.apis: list[ApiProcess] = []
        self.workers: list[WorkerProcess] = []
        self._generation = 0
        self._instances = 0
        self._logs: list[IO[bytes]] = []

    def start(self) -> LocalSystem:
        """Servers up, schema migrated, the demo tenant seeded with no submission limits.

        The servers start from empty data directories each time: they run without fsync, and
        a rehearsal needs no history.
        """
        for data in (self.postgres.data_dir, self.redis.data_dir):
            shutil.rmtree(data, ignore_errors=True)
        logs = private_dir(self.root / "logs")
        self.postgres.start(stdout=self._log(logs / "postgres.log"), stderr=subprocess.STDOUT)
        self.redis.start(stdout=self._log(logs / "redis.log"), stderr=subprocess.STDOUT)
        dsn = self.postgres.dsn()
        upgrade(dsn)
        self._unlimited()
        asyncio.run(seed_tenants(dsn, ["demo"]))
        return self

    def _unlimited(self) -> None:
        # The load submits 12 jobs a second, all rehearsal long: the default per-tenant limits
        # would turn most of them into 429s.
        apply_tenant_limits(
            self.postgres.dsn(), Settings(tenant_max_active_jobs=None, tenant_max_submissions_per_minute=None)
        )

    def _log(self, path: Path) -> IO[bytes]:
        handle = path.open("ab")
        self._logs.append(handle)
        return handle

    def token(self) -> str:
        """A dev token of the demo tenant, signed with this system's own secret."""
        _, org_id, user_id = TENANTS["demo"]
        return mint_dev_token(self.secret, user_id=user_id, org_id=org_id)

    def probe_token(self) -> str:
        """A token of the probe tenant (app/core/probes.py), whose jobs are release probes."""
        return mint_dev_token(self.secret, user_id=PROBE_USER_ID, org_id=PROBE_ORGANIZATION_ID)

    def next_names(self, faults: Mapping[str, str], tree: Path = ROOT) -> tuple[str, str]:
        """The API and worker revision names of the next release, of `tree`'s code."""
        self._generation += 1
        digest = f"sha256:{source_hash(tree, IMAGE_SOURCES)}"
        template = {"generation": self._generation, "env": dict(faults)}
        return revision_name(API_SERVICE, digest, template), revision_name(WORKER_POOL, digest, template)

    def env(self, port: int, faults: Mapping[str, str]) -> dict[str, str]:
        inherited = {
            k: v for k, v in os.environ.items() if k not in OWN_VARIABLES and not k.startswith("FAULT_")
        }
        return {
            **inherited,
            "APP_ENV": "local",
            "DATABASE_URL": self.postgres.dsn(),
            "MIGRATIONS_DATABASE_URL": self.postgres.dsn(),
            "REDIS_URL": self.redis.url(),
            "SUPABASE_JWT_SECRET": self.secret,
            "HOST": LOOPBACK,
            "PORT": str(port),
            "LOG_FORMAT": "console",
            # Each request is an access log line at INFO: under load, that is most of the output.
            "LOG_LEVEL": "WARNING",
            "PYTHONUNBUFFERED": "1",
            # Marks the process as this rehearsal's, for whoever looks for strays (ps e, /proc).
            "LIFTOFF_REHEARSAL_DIR": str(self.root),
            **faults,
        }

    def start_api(self, name: str, faults: Mapping[str, str] | None = None, tree: Path = ROOT) -> ApiProcess:
        """Start one API revision (of `tree`'s code) and wait until its `/ready` answers 200."""
        api = self._spawn(name, free_port(), faults or {}, tree)
        api.wait_ready()
        return api

    def stop_api(self, api: ApiProcess) -> None:
        api.stop()
        if api in self.apis:
            self.apis.remove(api)

    def restart_api(self, api: ApiProcess) -> tuple[ApiProcess, float]:
        """Stop `api` and start it again from scratch on the same port; seconds until it is ready.

        What a rollback by redeploy costs on this machine: a process start and its readiness.
        """
        self.stop_api(api)
        started = time.perf_counter()
        fresh = self._spawn(api.name, api.port, api.faults, api.tree)
        fresh.wait_ready()
        return fresh, time.perf_counter() - started

    def spawn_worker(
        self, revision: str, faults: Mapping[str, str] | None = None, tree: Path = ROOT
    ) -> WorkerProcess:
        """Start one instance of a worker revision of `tree`'s code (not yet ready: see
        WorkerProcess.wait_ready)."""
        self._instances += 1
        log = private_dir(self.root / "logs") / f"{revision}-{self._instances}.log"
        env = {
            **self.env(free_port(), faults or {}),
            **WORKER_INSTANCE_ENV,
            "CLOUD_RUN_WORKER_POOL_REVISION": revision,
        }
        process = subprocess.Popen(  # noqa: S603 (our own interpreter and module)
            [sys.executable, "-m", "app", "worker"],
            cwd=tree,
            env=env,
            stdout=self._log(log),
            stderr=subprocess.STDOUT,
        )
        worker = WorkerProcess(revision, int(env["PORT"]), process, log)
        self.workers.append(worker)
        return worker

    def stop_workers(self, workers: list[WorkerProcess]) -> None:
        """SIGTERM to all at once, then wait for each: instances drain side by side."""
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.wait_stopped()
            if worker in self.workers:
                self.workers.remove(worker)

    def migrate(self, tree: Path, allowed_contract: tuple[str, ...] = ()) -> None:
        """`python -m app migrate` of `tree`'s code, as a release's migrations job runs it: the
        contract migrations held unless allowed. ServerError if it fails."""
        log = private_dir(self.root / "logs") / "migrate.log"
        done = subprocess.run(  # noqa: S603 (our own interpreter and module)
            [sys.executable, "-m", "app", "migrate", *(f"--allow-contract={r}" for r in allowed_contract)],
            cwd=tree,
            # `migrate` writes the default tenant limits from these: far above the load's rate.
            env={**self.env(free_port(), {}), **REHEARSAL_LIMITS},
            capture_output=True,
            text=True,
            check=False,
        )
        log.write_text(done.stdout + done.stderr)
        if done.returncode != 0:
            raise ServerError(f"the migrations failed (log: {log}): {done.stderr[-600:]}")

    def _spawn(self, name: str, port: int, faults: Mapping[str, str], tree: Path = ROOT) -> ApiProcess:
        log = private_dir(self.root / "logs") / f"{name}.log"
        process = subprocess.Popen(  # noqa: S603 (our own interpreter and module)
            [sys.executable, "-m", "app", "api"],
            cwd=tree,
            env=self.env(port, faults),
            stdout=self._log(log),
            stderr=subprocess.STDOUT,
        )
        api = ApiProcess(name, port, process, log, dict(faults), tree)
        self.apis.append(api)
        return api

    def stop(self) -> None:
        """Stop every process this system started, the API revisions first."""
        errors: list[str] = []
        try:
            self.stop_workers(list(self.workers))
        except (OSError, ServerError) as exc:
            errors.append(f"workers: {exc}")
        for api in reversed(self.apis):
            try:
                api.stop()
            except (OSError, ServerError) as exc:
                errors.append(f"{api.name}: {exc}")
        self.apis.clear()
        for server in (self.redis, self.postgres):
            try:
                server.stop()
            except (OSError, ServerError) as exc:
                errors.append(str(exc))
        for handle in self._logs:
            handle.close()
        if errors:
            raise ServerError("could not stop cleanly: " + "; ".join(errors))
