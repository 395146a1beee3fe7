"""Send Celery tasks for job ids read from stdin (one per line); runs in bench/.venv-celery."""

import sys

from celery_app import generate

ids = [line.strip() for line in sys.stdin if line.strip()]
for job_id in ids:
    generate.delay(job_id)
print(len(ids))
