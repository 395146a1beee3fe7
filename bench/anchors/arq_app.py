"""arq anchor, measured idle only: how many Redis commands an idle arq worker sends.

Runs in bench/.venv-arq only.
"""

import os

from arq.connections import RedisSettings


async def generate(ctx, job_id: str) -> None:
    return None


class WorkerSettings:
    functions = [generate]
    redis_settings = RedisSettings.from_dsn(os.environ["BENCH_BROKER_URL"])
    max_jobs = 4
