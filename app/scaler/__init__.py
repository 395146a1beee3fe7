"""The worker pool's scaler: sizes the pool to the queue, down to its floor when idle.

`python -m app scaler` serves POST /wake (the API, on accepting a job), POST /reconcile (Cloud
Scheduler, each minute) and GET /health; both POSTs read the queue's demand in Postgres and
set the pool's instance count (docs/scaling.md).
"""
