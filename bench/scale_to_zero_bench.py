"""The worker pool at zero, locally: a job's wait from its submission to its start when no worker
runs (`make dev SCALE=on-demand`), against the same wait with a warm worker, in the same run.

    .venv/bin/python bench/scale_to_zero_bench.py [--rounds 5] [--delays 0,5]

For each start delay (SCALER_START_DELAY_SECONDS, the simulated instance start), one local system
as `make dev SCALE=on-demand` starts it (`python -m app.local --scale on-demand`, its own ports
and data directory). Each round:
  cold   the pool at zero (no `python -m app worker` process left after the idle period): one
         job submitted by POST /v1/generations, timed from just before the POST to the attempt's
         start (generations.started_at, written by the worker that claims it; same clock)
  warm   the baseline: right after the cold job, with its worker still up and idle (waiting on
         Redis), one more job timed the same way
The figures are medians over the rounds, and the ratio cold / warm. A fixed-pool system (`make
dev`) is measured too, warm only, to show the on-demand system's warm worker is the fixed one's.
The idle period is 2 s here (60 s by default) so that a round need not wait a minute for zero;
WORKER_WAKE_SECONDS is 1 s, below it, as 10 s is below the cloud's 300 s.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import asyncpg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.local.servers import free_port  # noqa: E402

IDLE_SECONDS = 2.0
INTERVAL_SECONDS = 2.0
WAKE_SECONDS = 1.0
START_TIMEOUT = 120.0


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


class System:
    """`python -m app.local` in the background, as `make dev` runs it, in a directory of its own."""

    def __init__(self, root: Path, scale: str, start_delay: float) -> None:
        self.root = root
        self.scale = scale
        self.api_port, self.pg_port, self.worker_port = free_port(), free_port(), free_port()
        self.scaler_port = free_port()
        env = {
            k: v for k, v in os.environ.items() if not k.startswith(("SCALER_", "WORKER_", "LOCAL_PROVIDER_"))
        }
        env.update(
            LIFTOFF_LOCAL_DIR=str(root / ".local"),
            LIFTOFF_API_PORT=str(self.api_port),
            LIFTOFF_WORKER_PORT=str(self.worker_port),
            LIFTOFF_SCALER_PORT=str(self.scaler_port),
            LIFTOFF_PG_PORT=str(self.pg_port),
            LIFTOFF_REDIS_PORT=str(free_port()),
            SCALER_START_DELAY_SECONDS=str(start_delay),
            SCALER_IDLE_SECONDS=str(IDLE_SECONDS),
            SCALER_INTERVAL_SECONDS=str(INTERVAL_SECONDS),
            WORKER_WAKE_SECONDS=str(WAKE_SECONDS),
            LOG_LEVEL="WARNING",
        )
        root.mkdir(mode=0o701)
        self.log_path = root / "make-dev.log"
        with self.log_path.open("ab") as out:
            self.process = subprocess.Popen(  # noqa: S603
                [sys.executable, "-m", "app.local", "--scale", scale],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while not self._ready():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the local system did not start:\n{self.log_path.read_text()[-4000:]}")
            time.sleep(0.2)
        env_file = (root / ".local" / "dev.env").read_text().splitlines()
        values = dict(line.split("=", 1) for line in env_file if line and not line.startswith("#"))
        self.token = values["LIFTOFF_DEV_TOKEN"]
        self.dsn = f"postgresql://postgres@127.0.0.1:{self.pg_port}/postgres"

    def _ready(self, url: str | None = None) -> bool:
        try:
            with urllib.request.urlopen(url or f"http://127.0.0.1:{self.api_port}/ready", timeout=2) as r:  # noqa: S310
                return bool(r.status == 200)
        except OSError:
            return False

    def wait_listening(self) -> None:
        """The scaler (on demand) or the fixed worker answering on its port: the system is whole."""
        port = self.scaler_port if self.scale == "on-demand" else self.worker_port
        deadline = time.monotonic() + START_TIMEOUT
        while not self._ready(f"http://127.0.0.1:{port}/health"):
            if time.monotonic() > deadline:
                raise RuntimeError(f"nothing answers on {port}:\n{self.log_path.read_text()[-4000:]}")
            time.sleep(0.2)
        if self.scale != "on-demand":
            sent, job = self.submit("warm-up")  # the fixed worker's first job: it is warm after
            asyncio.run(self.timed(job, sent))

    def workers(self) -> int:
        """`python -m app worker` processes under this system."""
        listing = subprocess.run(
            ["ps", "-A", "-o", "pid=,ppid=,stat=,command="],  # noqa: S607
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        children: dict[int, list[tuple[int, str]]] = {}
        for line in listing.splitlines():
            pid, ppid, stat, command = line.split(None, 3)
            if not stat.startswith("Z"):
                children.setdefault(int(ppid), []).append((int(pid), command))
        count, frontier = 0, [self.process.pid]
        while frontier:
            for child, what in children.get(frontier.pop(), []):
                count += what.endswith("-m app worker")
                frontier.append(child)
        return count

    def wait_workers(self, count: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.workers() != count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.workers()} worker processes, not {count}, after {timeout}s")
            time.sleep(0.1)

    def submit(self, prompt: str) -> tuple[float, str]:
        """The wall-clock time just before the POST, and the job's id."""
        request = urllib.request.Request(  # noqa: S310
            f"http://127.0.0.1:{self.api_port}/v1/generations",
            data=json.dumps({"prompt": prompt}).encode(),
            method="POST",
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        sent = time.time()
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            if response.status != 202:
                raise RuntimeError(f"POST /v1/generations answered {response.status}")
            return sent, str(json.loads(response.read())["id"])

    async def timed(self, job: str, sent: float, timeout: float = 120.0) -> dict[str, float]:
        """Seconds from `sent` to the job's start and to its end, read from Postgres."""
        conn = await asyncpg.connect(self.dsn)
        try:
            deadline = time.monotonic() + timeout
            while True:
                row = await conn.fetchrow(
                    "SELECT extract(epoch FROM started_at)::float8 AS started,"
                    " extract(epoch FROM finished_at)::float8 AS finished, ai_status"
                    " FROM generations WHERE id = $1::uuid",
                    job,
                )
                if row is not None and row["ai_status"] == "succeeded":
                    return {
                        "submit_to_start_seconds": round(row["started"] - sent, 4),
                        "submit_to_succeeded_seconds": round(row["finished"] - sent, 4),
                    }
                if time.monotonic() > deadline:
                    raise RuntimeError(f"job {job} not done after {timeout}s: {row and row['ai_status']}")
                await asyncio.sleep(0.01)
        finally:
            await conn.close()

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def on_demand_round(system: System, delay: float, index: int) -> dict[str, Any]:
    # At zero: the last round's worker stopped after the idle period.
    system.wait_workers(0, IDLE_SECONDS + INTERVAL_SECONDS + 30)
    time.sleep(WAKE_SECONDS + 0.2)  # the API's last wake is over: this job's wake is sent
    sent, job = system.submit(f"cold {index}")
    cold = asyncio.run(system.timed(job, sent, timeout=delay + 60))
    # Warm: its worker is up, idle again on Redis, well within the idle period.
    time.sleep(0.3)
    if system.workers() != 1:
        raise RuntimeError("the worker stopped before the warm job")
    sent, job = system.submit(f"warm {index}")
    warm = asyncio.run(system.timed(job, sent))
    return {"cold": cold, "warm": warm}


def fixed_round(system: System, index: int) -> dict[str, Any]:
    time.sleep(0.3)
    sent, job = system.submit(f"fixed {index}")
    return {"warm": asyncio.run(system.timed(job, sent))}


def median(rounds: list[dict[str, Any]], kind: str, figure: str = "submit_to_start_seconds") -> float:
    return round(float(statistics.median(r[kind][figure] for r in rounds)), 4)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--delays", default="0,5", help="start delays in seconds, comma-separated")
    args = parser.parse_args()
    delays = [float(d) for d in args.delays.split(",")]

    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="scale-to-zero-bench-") as tmp:
        Path(tmp).chmod(0o701)  # the embedded Postgres runs as its own user when we are root
        for delay in delays:
            name = f"on-demand-{delay:g}s"
            log(f"{name}: starting the local system")
            system = System(Path(tmp) / name, "on-demand", delay)
            try:
                system.wait_listening()
                rounds = []
                for index in range(args.rounds):
                    rounds.append(on_demand_round(system, delay, index))
                    log(f"{name} round {index + 1}: {json.dumps(rounds[-1])}")
            finally:
                system.stop()
            results[name] = {"start_delay_seconds": delay, "rounds": rounds}
        log("fixed: starting the local system")
        system = System(Path(tmp) / "fixed", "fixed", 0)
        try:
            system.wait_listening()
            rounds = []
            for index in range(args.rounds):
                rounds.append(fixed_round(system, index))
                log(f"fixed round {index + 1}: {json.dumps(rounds[-1])}")
        finally:
            system.stop()
        results["fixed"] = {"rounds": rounds}

    summary: dict[str, Any] = {}
    for name, result in results.items():
        rounds = result["rounds"]
        figures: dict[str, Any] = {"warm_submit_to_start_seconds": median(rounds, "warm")}
        if "start_delay_seconds" in result:
            cold = median(rounds, "cold")
            figures.update(
                start_delay_seconds=result["start_delay_seconds"],
                cold_submit_to_start_seconds=cold,
                cold_submit_to_succeeded_seconds=median(rounds, "cold", "submit_to_succeeded_seconds"),
                cold_beyond_the_delay_seconds=round(cold - result["start_delay_seconds"], 4),
                ratio_cold_over_warm=round(cold / figures["warm_submit_to_start_seconds"], 1),
            )
        summary[name] = figures

    now = dt.datetime.now(dt.UTC)
    out = ROOT / "bench" / "results" / f"scale-to-zero-{now:%Y%m%d-%H%M%S}.json"
    out.write_text(
        json.dumps(
            {
                "date": now.isoformat(timespec="seconds"),
                "machine": {"python": platform.python_version(), "machine": platform.machine()},
                "idle_seconds": IDLE_SECONDS,
                "interval_seconds": INTERVAL_SECONDS,
                "wake_seconds": WAKE_SECONDS,
                "results": results,
                "summary": summary,
            },
            indent=2,
        )
        + "\n"
    )
    print(json.dumps(summary, indent=2))
    print(f"raw results: {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
