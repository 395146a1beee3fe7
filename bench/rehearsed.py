"""What the rehearsal benchmarks share: rounds on one rehearsed local system, and their results.

Imported by bench/rollback_bench.py and bench/worker_release_bench.py (run from the repository
root; each puts the root on sys.path first).
"""

from __future__ import annotations

import datetime as dt
import json
import platform
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from release.rehearsal.run import Rehearsal, profile
from release.rehearsal.system import LocalSystem

ROOT = Path(__file__).resolve().parents[1]
Round = Callable[[LocalSystem, Rehearsal], dict[str, Any]]


def rounds(name: str, count: int, rate: float, one: Round) -> list[dict[str, Any]]:
    """`count` rounds of `one` on a rehearsal of a fresh local system, each printed as it ends."""
    done: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix=f"{name}-bench-") as tmp:
        Path(tmp).chmod(0o701)  # the embedded Postgres runs as its own user when we are root
        system = LocalSystem(Path(tmp))
        try:
            system.start()
            with Rehearsal.on(system, rate=rate) as rehearsal:
                for index in range(count):
                    figures = one(system, rehearsal)
                    done.append(figures)
                    print(f"round {index + 1}: {json.dumps(figures)}", flush=True)
        finally:
            system.stop()
    return done


def save(name: str, done: list[dict[str, Any]], summary: dict[str, Any], rate: float) -> Path:
    """The raw results in bench/results/<name>-<time>.json; the summary printed."""
    now = dt.datetime.now(dt.UTC)
    results = {
        "date": now.isoformat(timespec="seconds"),
        "machine": {"python": platform.python_version(), "machine": platform.machine()},
        "rounds": done,
        "summary": summary,
        "profile": profile().model_dump(mode="json"),
        "rate": rate,
    }
    out = ROOT / "bench" / "results" / f"{name}-{now:%Y%m%d-%H%M%S}.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    print(f"raw results: {out.relative_to(ROOT)}")
    return out
