"""The worker's gates read from Postgres, and the synthetic traffic a quiet step is judged on.

Both serve the cloud and the rehearsal alike: the attempts of a worker revision are rows of
`generation_logs` wherever it runs, and a probe is an HTTP request to the candidate's own URL
(its tag URL in the cloud, its port here) made as the probe tenant (app/core/probes.py), whose
jobs the worker answers offline.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import asyncpg
import httpx

from app.core.probes import PROBE_MODEL
from release.gates import JobWindow
from stacks.ledger import Release

# The attempts a revision is judged on: ended by the revision itself. Cancelled (a tenant's
# choice) and released (given back at a shutdown, when a split moves) are left out.
_JOBS = """
SELECT count(*) FILTER (WHERE status IN ('succeeded', 'retry', 'failed', 'lost')) AS attempts,
       count(*) FILTER (WHERE status IN ('retry', 'failed')) AS failures,
       count(*) FILTER (WHERE status = 'lost') AS expired,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY duration_ms)
         FILTER (WHERE status IN ('succeeded', 'retry', 'failed')) AS p95_ms
FROM generation_logs
WHERE revision = $1 AND created_at >= to_timestamp($2) AND created_at < to_timestamp($3)
"""


class PostgresJobs:
    """The JobMetrics port: a worker revision's attempts over a window, from `generation_logs`.

    A row is written when its attempt ends (created_at), by the worker that ran it or by the
    sweep that found its lease expired, so a window holds what ended in it: nothing to wait for.
    """

    def __init__(self, dsn: str, timeout_seconds: float = 10.0) -> None:
        self.dsn = dsn
        self.timeout_seconds = timeout_seconds

    def jobs(self, revision: str, start: float, end: float) -> JobWindow:
        return asyncio.run(self._read(revision, start, end))

    async def _read(self, revision: str, start: float, end: float) -> JobWindow:
        conn = await asyncpg.connect(self.dsn, timeout=self.timeout_seconds)
        try:
            row = await conn.fetchrow(_JOBS, revision, start, end, timeout=self.timeout_seconds)
        finally:
            await conn.close()
        if row is None:  # an aggregate always has its row
            raise RuntimeError("the attempts query returned no row")
        p95 = row["p95_ms"]
        return JobWindow(
            attempts=int(row["attempts"]),
            failures=int(row["failures"]),
            expired=int(row["expired"]),
            p95_seconds=float(p95) / 1000 if p95 is not None else None,
        )


class UnreadableJobs:
    """Where no database is given: the worker's gates cannot be read, and saying so is safer
    than promoting a worker nobody judged (the step fails and goes back to stable)."""

    def __init__(self, why: str) -> None:
        self.why = why

    def jobs(self, revision: str, start: float, end: float) -> JobWindow:
        raise RuntimeError(f"cannot read the attempts of {revision}: {self.why}")


@dataclass
class HttpSynthetic:
    """The Synthetic port: probes at `rate` a second to the candidate's own URL, as the probe tenant.

    An API probe lists the probe tenant's jobs (a read through auth, the database and RLS); a
    job probe submits one job of the probe model, which the candidate worker takes at its share
    of the instances. Each probe is one request, and each counts in the candidate API's windows.
    """

    url_for: Callable[[Release], str]
    headers: Callable[[], Mapping[str, str]]
    rate: float
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    timeout_seconds: float = 10.0
    sent: list[tuple[str, int]] = field(default_factory=list)

    def send(self, release: Release, *, api: bool, jobs: bool, seconds: float, limit: int) -> int:
        base = self.url_for(release).rstrip("/")
        kinds = [kind for kind, wanted in (("api", api), ("job", jobs)) if wanted]
        if not kinds or limit <= 0:
            self.sleep(seconds)
            return 0
        interval = 1.0 / self.rate
        deadline = self.clock() + seconds
        count = 0
        with httpx.Client(timeout=self.timeout_seconds, headers=dict(self.headers())) as http:
            next_at = self.clock()
            while count < limit:
                now = self.clock()
                if now >= deadline:
                    break
                if now < next_at:
                    self.sleep(min(next_at, deadline) - now)
                    continue
                kind = kinds[count % len(kinds)]
                self.sent.append((kind, self._probe(http, base, kind)))
                count += 1
                next_at += interval
        left = deadline - self.clock()
        if left > 0:
            self.sleep(left)
        return count

    @staticmethod
    def _probe(http: httpx.Client, base: str, kind: str) -> int:
        """One probe; its status (0 when there was no response). A failed probe is the
        candidate's failure to count, not the controller's: the gates read it from the metrics."""
        try:
            if kind == "api":
                response = http.get(f"{base}/v1/generations", params={"limit": 1})
            else:
                response = http.post(
                    f"{base}/v1/generations",
                    json={"prompt": "release probe", "model": PROBE_MODEL},
                    headers={"Idempotency-Key": f"probe-{uuid.uuid4()}"},
                )
        except httpx.HTTPError:
            return 0
        return response.status_code
