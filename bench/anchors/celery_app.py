"""Celery 5 anchor: the same no-op job as Liftoff's, ending with the same UPDATE in Postgres.

Configured as Celery's docs advise for jobs that must not be lost: acks_late, with
reject_on_worker_lost, and prefetch of 1. Runs in bench/.venv-celery only.
"""

import json
import os

import psycopg
from celery import Celery
from celery.signals import worker_process_init

app = Celery("bench", broker=os.environ["BENCH_BROKER_URL"])
app.conf.update(
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    broker_connection_retry_on_startup=True,
    task_serializer="json",
)

_conn: psycopg.Connection | None = None


@worker_process_init.connect
def _connect(**_kwargs):
    global _conn
    _conn = psycopg.connect(os.environ["BENCH_DSN"], autocommit=True)


@app.task(name="generate")
def generate(job_id: str) -> None:
    global _conn
    if _conn is None:
        _connect()
    _conn.execute(
        "UPDATE generations SET ai_status = 'succeeded', result = %s::jsonb, attempts = attempts + 1,"
        " finished_at = now(), updated_at = now() WHERE id = %s",
        (json.dumps({"text": "ok"}), job_id),
    )
