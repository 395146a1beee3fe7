"""Prometheus metrics of the worker, and the small HTTP server for /health and /metrics."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app

DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
# The event loop ticks this often; /health fails when it has not for LIVENESS_SECONDS.
LIVENESS_SECONDS = 30.0


class WorkerMetrics:
    """Counters of outcomes, job durations, and the queue as seen at the last sweep."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.processed = Counter("liftoff_worker_jobs_processed", "Jobs that succeeded.", registry=r)
        self.failed = Counter(
            "liftoff_worker_jobs_failed", "Attempts that failed.", ["retryable"], registry=r
        )
        self.retried = Counter("liftoff_worker_jobs_retried", "Attempts scheduled for retry.", registry=r)
        self.dead_lettered = Counter(
            "liftoff_worker_jobs_dead_lettered", "Jobs marked failed for good.", registry=r
        )
        self.cancelled = Counter("liftoff_worker_jobs_cancelled", "Jobs cancelled while running.", registry=r)
        self.released = Counter("liftoff_worker_jobs_released", "Jobs given back at shutdown.", registry=r)
        self.recovered = Counter(
            "liftoff_worker_leases_recovered", "Jobs taken back from workers that died.", registry=r
        )
        self.duration = Histogram(
            "liftoff_worker_job_duration_seconds",
            "Time an attempt ran.",
            ["outcome"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.probe_attempts = Counter(
            "liftoff_worker_probe_attempts",
            "Attempts of release probes' jobs (counted nowhere else but the gauges).",
            ["outcome"],
            registry=r,
        )
        self.running = Gauge("liftoff_worker_jobs_running", "Jobs running in this process.", registry=r)
        self.queue_depth = Gauge("liftoff_queue_depth", "Jobs waiting, at the last sweep.", registry=r)
        self.oldest_age = Gauge(
            "liftoff_queue_oldest_age_seconds",
            "Age of the oldest waiting job, at the last sweep.",
            registry=r,
        )
        self.last_tick = time.monotonic()

    def tick(self) -> None:
        self.last_tick = time.monotonic()


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def serve(metrics: WorkerMetrics, host: str, port: int) -> _ThreadingWSGIServer:
    """Serve /health and /metrics from a thread, so a busy event loop cannot hide its own state."""
    metrics_app = make_wsgi_app(metrics.registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == "/health":
            stalled = time.monotonic() - metrics.last_tick > LIVENESS_SECONDS
            status = "503 Service Unavailable" if stalled else "200 OK"
            body = json.dumps({"status": "stalled" if stalled else "ok"}).encode()
            start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
            return [body]
        if environ.get("PATH_INFO") == "/metrics":
            return metrics_app(environ, start_response)  # type: ignore[no-any-return]
        start_response("404 Not Found", [("Content-Type", "application/json")])
        return [b'{"error": {"code": "not_found", "message": "Not Found"}}']

    server = make_server(host, port, app, server_class=_ThreadingWSGIServer, handler_class=_QuietHandler)
    return server
