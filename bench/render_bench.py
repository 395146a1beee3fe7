"""Time to render the prod stack under the mock engine, against an empty program as the baseline.

    .venv/bin/python bench/render_bench.py [--rounds 7]

Both run in this process, alternating, so the ratio says what the program itself costs over
the engine's fixed overhead on whatever machine runs it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pulumi

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tools.render import RecordingMocks, render, run_under_mocks, stack_config  # noqa: E402

SECRETS = {"liftoff:openaiApiKey": "sk-bench", "supabase:accessToken": "sbp_bench"}


def empty_program() -> float:
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    started = time.perf_counter()
    try:
        pulumi.runtime.set_all_config({})
        pulumi.runtime.set_mocks(RecordingMocks(), project="liftoff", stack="prod", preview=False)
        run_under_mocks(lambda: None)()
    finally:
        loop.close()
        asyncio.set_event_loop(None)
    return time.perf_counter() - started


def prod_program() -> tuple[float, int]:
    config = stack_config("prod")
    started = time.perf_counter()
    rendering = render("prod", config, SECRETS)
    return time.perf_counter() - started, len(rendering.resources)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    prod_program()  # warm imports
    empty, prod, resources = [], [], 0
    for _ in range(args.rounds):
        empty.append(empty_program())
        seconds, resources = prod_program()
        prod.append(seconds)
    result = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(["bench/render_bench.py", *sys.argv[1:]]),
        "resources": resources,
        "empty_program_median_seconds": round(statistics.median(empty), 3),
        "prod_render_median_seconds": round(statistics.median(prod), 3),
        "ratio": round(statistics.median(prod) / statistics.median(empty), 1),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
