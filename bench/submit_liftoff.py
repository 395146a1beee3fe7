"""Signal Liftoff jobs whose ids arrive on stdin, as the API does: one LPUSH per job."""

import sys

import redis

client = redis.Redis.from_url(sys.argv[1])
ids = [line.strip() for line in sys.stdin if line.strip()]
for job_id in ids:
    client.lpush("liftoff:jobs", job_id)
print(len(ids))
