"""What became of the jobs submitted during a rehearsed release: every one finished, none twice."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import asyncpg

_SUMMARY = """
WITH submitted AS (
  SELECT id, ai_status FROM generations WHERE created_at >= to_timestamp($1) AND created_at < to_timestamp($2)
), succeeded AS (
  SELECT l.generation_id, count(*) AS n
  FROM generation_logs l JOIN submitted s ON s.id = l.generation_id
  WHERE l.status = 'succeeded' GROUP BY 1
)
SELECT (SELECT count(*) FROM submitted) AS submitted,
       (SELECT count(*) FROM submitted WHERE ai_status IN ('queued', 'running')) AS unfinished,
       (SELECT count(*) FROM submitted WHERE ai_status = 'failed') AS failed,
       (SELECT count(*) FROM succeeded WHERE n > 1) AS duplicated
"""

_BY_REVISION = """
SELECT l.revision, count(*) AS n FROM generation_logs l JOIN generations g ON g.id = l.generation_id
WHERE g.created_at >= to_timestamp($1) AND g.created_at < to_timestamp($2) AND l.status = 'succeeded'
GROUP BY 1
"""


@dataclass(frozen=True, slots=True)
class JobSummary:
    """The jobs submitted in a window: how many, how many never finished (lost), failed for
    good, or succeeded more than once (run twice); and which worker revision finished them."""

    submitted: int
    unfinished: int
    failed: int
    duplicated: int
    by_revision: dict[str, int]


async def _read(dsn: str, start: float, end: float) -> JobSummary:
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow(_SUMMARY, start, end)
        rows = await conn.fetch(_BY_REVISION, start, end)
    finally:
        await conn.close()
    if row is None:
        raise RuntimeError("the job summary query returned no row")
    return JobSummary(
        submitted=int(row["submitted"]),
        unfinished=int(row["unfinished"]),
        failed=int(row["failed"]),
        duplicated=int(row["duplicated"]),
        # Attempts written by code older than migration 0006 name no revision.
        by_revision={str(r["revision"] or "(none)"): int(r["n"]) for r in rows},
    )


def settle(dsn: str, start: float, end: float, timeout: float) -> JobSummary:
    """The summary once every job submitted between `start` and `end` has finished, or as it
    stands after `timeout` (what is still unfinished then counts as lost)."""
    deadline = time.monotonic() + timeout
    while True:
        summary = asyncio.run(_read(dsn, start, end))
        if summary.unfinished == 0 or time.monotonic() > deadline:
            return summary
        time.sleep(0.5)
