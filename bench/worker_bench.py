"""Worker benchmarks, side by side with Celery 5 and arq in the same run, on the same servers.

    .venv/bin/python bench/worker_bench.py [--jobs 5000] [--rounds 3] [--idle-seconds 480] [--only NAME]

Measures, for Liftoff's worker (and the anchors where the figure applies):
  throughput   no-op jobs end to end, submit to `succeeded` in Postgres, one worker process
  idle cost    Redis commands per worker-hour while idle (INFO commandstats)
  per job      Redis commands per job, submitter and worker together
  recovery     seconds from a SIGKILL mid-job to that job's completion by another worker
  memory       the worker's idle RSS
  pooler       Liftoff's throughput direct against through PgBouncer in transaction mode
               (Debian's package), alternating (--only pooler)

Celery and arq need conflicting redis-py versions, so each runs from its own virtualenv under
bench/, made here on first use. Every figure comes from this one run: compare them as ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import psutil
import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.local.servers import LocalPgBouncer, LocalPostgres, LocalRedis, free_port  # noqa: E402
from app.migrate import upgrade  # noqa: E402

BENCH = ROOT / "bench"
ANCHORS = BENCH / "anchors"
ANCHOR_VENVS = {
    "celery": ["celery[redis]>=5.5,<6", "psycopg[binary]>=3.2"],
    "arq": ["arq>=0.26"],
}
ORG = "aaaaaaaa-0000-4000-8000-000000000001"
USER = "aaaaaaaa-1111-4000-8000-000000000001"
CONCURRENCY = 4


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def ensure_venv(name: str) -> Path:
    venv = BENCH / f".venv-{name}"
    python = venv / "bin" / "python"
    if not python.exists():
        log(f"creating {venv.relative_to(ROOT)}")
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", *ANCHOR_VENVS[name]], check=True)
    return venv


def commands(client: redis.Redis) -> dict[str, int]:
    stats: dict[str, Any] = client.info("commandstats")  # type: ignore[assignment]
    calls = {name.removeprefix("cmdstat_"): int(value["calls"]) for name, value in stats.items()}
    return {k: v for k, v in calls.items() if not k.startswith(("config", "info"))}


def rss_mb(pid: int) -> float:
    process = psutil.Process(pid)
    total = process.memory_info().rss + sum(c.memory_info().rss for c in process.children(recursive=True))
    return round(total / 2**20, 1)


class Bench:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.pg = LocalPostgres(workdir / "pg", free_port(), durable=False).start()
        try:
            upgrade(self.pg.dsn())
        except BaseException:
            self.pg.stop()
            raise
        self.redis: dict[str, LocalRedis] = {}
        self.procs: list[subprocess.Popen[bytes]] = []

    def redis_for(self, name: str) -> LocalRedis:
        if name not in self.redis:
            self.redis[name] = LocalRedis(self.workdir / f"redis-{name}", free_port(), durable=False).start(
                stdout=subprocess.DEVNULL
            )
        return self.redis[name]

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for server in self.redis.values():
            server.stop()
        self.pg.stop()

    # -- jobs in Postgres ----------------------------------------------------------------------

    async def reset(self) -> None:
        conn = await asyncpg.connect(self.pg.dsn())
        try:
            await conn.execute(
                "TRUNCATE generation_logs, generations, organization_members, organizations CASCADE"
            )
            await conn.execute("INSERT INTO organizations (id) VALUES ($1)", ORG)
        finally:
            await conn.close()

    async def insert(self, count: int) -> list[str]:
        conn = await asyncpg.connect(self.pg.dsn())
        try:
            rows = await conn.fetch(
                "INSERT INTO generations (organization_id, created_by, prompt, model)"
                " SELECT $1, $2, 'no-op', 'bench' FROM generate_series(1, $3) RETURNING id",
                ORG,
                USER,
                count,
            )
        finally:
            await conn.close()
        return [str(r["id"]) for r in rows]

    async def count(self, status: str) -> int:
        conn = await asyncpg.connect(self.pg.dsn())
        try:
            return int(await conn.fetchval("SELECT count(*) FROM generations WHERE ai_status = $1", status))
        finally:
            await conn.close()

    async def wait_count(self, status: str, count: int, timeout: float) -> float:
        deadline = time.time() + timeout
        while (done := await self.count(status)) < count:
            if time.time() > deadline:
                raise RuntimeError(f"only {done}/{count} {status} after {timeout}s")
            await asyncio.sleep(0.05)
        return time.time()

    # -- workers ---------------------------------------------------------------------------------

    def start(
        self, name: str, argv: list[str], env: dict[str, str], cwd: Path = ROOT
    ) -> subprocess.Popen[bytes]:
        logfile = (self.workdir / f"{name}.log").open("ab")
        proc = subprocess.Popen(
            argv, env={**os.environ, **env}, cwd=cwd, stdout=logfile, stderr=subprocess.STDOUT
        )
        self.procs.append(proc)
        return proc

    def pgbouncer(self, pool_size: int) -> LocalPgBouncer:
        """PgBouncer in transaction mode in front of the bench's Postgres, as Supabase's poolers."""
        return LocalPgBouncer(
            self.workdir / "pgbouncer",
            free_port(),
            server_port=self.pg.port,
            users={"postgres": "bench"},
            pool_size=pool_size,
        ).start(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def liftoff(self, name: str, broker: LocalRedis, **settings: Any) -> subprocess.Popen[bytes]:
        env = {
            "DATABASE_URL": self.pg.dsn(),
            "REDIS_URL": broker.url(),
            "PORT": str(free_port()),
            # As Celery's worker runs here (-l INFO): one line per job.
            "LOG_LEVEL": "INFO",
            "WORKER_CONCURRENCY": str(CONCURRENCY),
            **{k.upper(): str(v) for k, v in settings.items()},
        }
        return self.start(name, [sys.executable, "-m", "app", "worker"], env)

    def celery(self, broker: LocalRedis) -> subprocess.Popen[bytes]:
        venv = ensure_venv("celery")
        env = {"BENCH_BROKER_URL": broker.url(), "BENCH_DSN": self.pg.dsn()}
        argv = [
            str(venv / "bin" / "celery"),
            "-A",
            "celery_app",
            "worker",
            "-c",
            str(CONCURRENCY),
            "-l",
            "INFO",
        ]
        return self.start("celery", argv, env, cwd=ANCHORS)

    def arq(self, broker: LocalRedis) -> subprocess.Popen[bytes]:
        venv = ensure_venv("arq")
        return self.start(
            "arq",
            [str(venv / "bin" / "arq"), "arq_app.WorkerSettings"],
            {"BENCH_BROKER_URL": broker.url()},
            cwd=ANCHORS,
        )

    def wait_log(self, name: str, needle: str, timeout: float = 60) -> None:
        deadline = time.time() + timeout
        path = self.workdir / f"{name}.log"
        while needle not in (path.read_text(errors="replace") if path.exists() else ""):
            if time.time() > deadline:
                raise RuntimeError(f"{name} did not log {needle!r} within {timeout}s")
            time.sleep(0.2)


async def throughput_once(
    bench: Bench, system: str, jobs: int, settings: dict[str, str] | None = None
) -> dict[str, Any]:
    await bench.reset()
    broker = bench.redis_for(f"tp-{system}")
    client = redis.Redis.from_url(broker.url())
    client.flushall()
    if system.startswith("liftoff"):
        worker = bench.liftoff("tp-liftoff", broker, local_provider_latency_ms=0, **(settings or {}))
        time.sleep(3)
        submit = [sys.executable, str(BENCH / "submit_liftoff.py"), broker.url()]
    else:
        worker = bench.celery(broker)
        bench.wait_log("celery", "ready.")
        submit = [str(BENCH / ".venv-celery" / "bin" / "python"), str(ANCHORS / "submit_celery.py")]
    ids = await bench.insert(jobs)
    client.config_resetstat()
    env = {**os.environ, "BENCH_BROKER_URL": broker.url(), "BENCH_DSN": bench.pg.dsn()}
    started = time.time()
    subprocess.run(
        submit, input="\n".join(ids).encode(), env=env, cwd=ANCHORS, check=True, capture_output=True
    )
    finished = await bench.wait_count("succeeded", jobs, timeout=600)
    calls = commands(client)
    worker.send_signal(signal.SIGTERM)
    worker.wait(timeout=60)
    (bench.workdir / "celery.log").unlink(missing_ok=True)
    seconds = finished - started
    log(f"throughput {system}: {jobs / seconds:.0f} jobs/s")
    return {
        "seconds": round(seconds, 2),
        "jobs_per_second": round(jobs / seconds, 1),
        "redis_commands_per_job": round(sum(calls.values()) / jobs, 2),
        "redis_commands": calls,
    }


async def throughput(bench: Bench, jobs: int, rounds: int) -> dict[str, Any]:
    """Alternate the two systems, round after round, and compare medians."""
    runs: dict[str, list[dict[str, Any]]] = {"liftoff": [], "celery": []}
    for _ in range(rounds):
        for system in runs:
            runs[system].append(await throughput_once(bench, system, jobs))
    results: dict[str, Any] = {"jobs": jobs, "rounds": rounds, "concurrency": CONCURRENCY}
    for system, system_runs in runs.items():
        rates = [r["jobs_per_second"] for r in system_runs]
        results[system] = {
            "median_jobs_per_second": statistics.median(rates),
            "rounds_jobs_per_second": rates,
            "redis_commands_per_job": statistics.median(r["redis_commands_per_job"] for r in system_runs),
            "redis_commands_last_round": system_runs[-1]["redis_commands"],
        }
    results["ratio"] = round(
        results["liftoff"]["median_jobs_per_second"] / results["celery"]["median_jobs_per_second"], 2
    )
    return results


async def pooler(bench: Bench, jobs: int, rounds: int) -> dict[str, Any]:
    """Liftoff's worker direct, direct with the transaction-pooler settings, and through
    PgBouncer in transaction mode with as many server connections as the worker's pool holds
    (so the pooler is a hop, not a queue), alternating."""
    bouncer = bench.pgbouncer(pool_size=CONCURRENCY + 2)
    systems = {
        "liftoff-direct": {},
        # The pooler's settings without the pooler: what they cost apart from the hop.
        "liftoff-direct-pooler-settings": {"db_transaction_pooler": "true"},
        "liftoff-pgbouncer": {"database_url": bouncer.dsn("postgres"), "db_transaction_pooler": "true"},
    }
    runs: dict[str, list[float]] = {system: [] for system in systems}
    try:
        for _ in range(rounds):
            for system, settings in systems.items():
                result = await throughput_once(bench, system, jobs, settings)
                runs[system].append(result["jobs_per_second"])
    finally:
        bouncer.stop()
    results: dict[str, Any] = {"jobs": jobs, "rounds": rounds, "pgbouncer_pool_size": bouncer.pool_size}
    for system, rates in runs.items():
        results[system] = {
            "median_jobs_per_second": statistics.median(rates),
            "rounds_jobs_per_second": rates,
        }
    results["ratio"] = round(
        results["liftoff-pgbouncer"]["median_jobs_per_second"]
        / results["liftoff-direct"]["median_jobs_per_second"],
        2,
    )
    return results


def idle(bench: Bench, seconds: float) -> dict[str, Any]:
    brokers = {name: bench.redis_for(f"idle-{name}") for name in ("liftoff", "celery", "arq")}
    procs = {
        "liftoff": bench.liftoff("idle-liftoff", brokers["liftoff"]),
        "celery": bench.celery(brokers["celery"]),
        "arq": bench.arq(brokers["arq"]),
    }
    bench.wait_log("celery", "ready.")
    time.sleep(10)
    clients = {name: redis.Redis.from_url(b.url()) for name, b in brokers.items()}
    for client in clients.values():
        client.config_resetstat()
    log(f"idle: measuring {seconds:.0f}s")
    time.sleep(seconds)
    results: dict[str, Any] = {}
    for name, client in clients.items():
        calls = commands(client)
        results[name] = {
            "window_seconds": seconds,
            "commands": calls,
            "commands_per_hour": round(sum(calls.values()) * 3600 / seconds),
            "idle_rss_mb": rss_mb(procs[name].pid),
        }
        log(
            f"idle {name}: {results[name]['commands_per_hour']} commands/h, {results[name]['idle_rss_mb']} MB"
        )
    for proc in procs.values():
        proc.send_signal(signal.SIGTERM)
    for proc in procs.values():
        proc.wait(timeout=60)
    return results


async def recovery(bench: Bench) -> dict[str, Any]:
    """Default lease (60 s) and sweep (15 s): a SIGKILLed worker's job completes elsewhere."""
    await bench.reset()
    broker = bench.redis_for("recovery")
    first = bench.liftoff("recovery-a", broker, local_provider_latency_ms=5000)
    time.sleep(3)
    (job_id,) = await bench.insert(1)
    redis.Redis.from_url(broker.url()).lpush("liftoff:jobs", job_id)
    await bench.wait_count("running", 1, timeout=30)
    second = bench.liftoff("recovery-b", broker, local_provider_latency_ms=5000)
    time.sleep(3)
    first.send_signal(signal.SIGKILL)
    killed = time.time()
    done = await bench.wait_count("succeeded", 1, timeout=300)
    second.send_signal(signal.SIGTERM)
    second.wait(timeout=60)
    seconds = round(done - killed, 1)
    log(f"recovery: {seconds}s")
    return {"seconds": seconds, "lease_seconds": 60, "sweep_seconds": 15, "job_seconds": 5}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--idle-seconds", type=float, default=480)
    parser.add_argument("--skip-recovery", action="store_true")
    parser.add_argument(
        "--only", choices=["throughput", "idle", "recovery", "pooler"], help="run one measurement"
    )
    args = parser.parse_args()
    if args.only != "pooler":
        for name in ANCHOR_VENVS:
            ensure_venv(name)
    memory = round(psutil.virtual_memory().total / 2**30)
    with tempfile.TemporaryDirectory(prefix="liftoff-bench-") as tmp:
        bench = Bench(Path(tmp))
        try:
            results: dict[str, Any] = {
                "date": datetime.now(UTC).isoformat(timespec="seconds"),
                "machine": f"{platform.machine()}, {os.cpu_count()} cores, {memory} GiB",
                "python": platform.python_version(),
                "command": " ".join(["bench/worker_bench.py", *sys.argv[1:]]),
            }
            if args.only in (None, "throughput"):
                results["throughput"] = asyncio.run(throughput(bench, args.jobs, args.rounds))
            if args.only in (None, "idle"):
                results["idle"] = idle(bench, args.idle_seconds)
            if args.only == "recovery" or (args.only is None and not args.skip_recovery):
                results["recovery"] = asyncio.run(recovery(bench))
            if args.only == "pooler":
                results["pooler"] = asyncio.run(pooler(bench, args.jobs, args.rounds))
        finally:
            bench.close()
    out = BENCH / "results" / f"worker-{datetime.now(UTC):%Y%m%d-%H%M%S}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    log(f"written to {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
