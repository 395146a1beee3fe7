"""JSON log lines in Cloud Logging's structured format, trace-linked per request."""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

TRACE_KEY = "logging.googleapis.com/trace"
SPAN_KEY = "logging.googleapis.com/spanId"
SAMPLED_KEY = "logging.googleapis.com/trace_sampled"

# Cloud Logging reads `severity`; these are its names for Python's levels.
_SEVERITY = {
    "debug": "DEBUG",
    "info": "INFO",
    "warning": "WARNING",
    "warn": "WARNING",
    "error": "ERROR",
    "exception": "ERROR",
    "critical": "CRITICAL",
}


def _cloud_logging_fields(_: Any, method_name: str, event_dict: MutableMapping[str, Any]) -> Any:
    level = event_dict.pop("level", method_name)
    event_dict["severity"] = _SEVERITY.get(str(level).lower(), "DEFAULT")
    event_dict["message"] = event_dict.pop("event", "")
    return event_dict


def parse_trace_context(header: str | None, project: str | None) -> dict[str, Any]:
    """Log fields for an `X-Cloud-Trace-Context: TRACE_ID/SPAN_ID;o=1` header."""
    if not header:
        return {}
    trace, _, rest = header.partition("/")
    trace = trace.strip()
    if not trace or len(trace) > 64 or not all(c in "0123456789abcdefABCDEF" for c in trace):
        return {}
    fields: dict[str, Any] = {TRACE_KEY: f"projects/{project}/traces/{trace}" if project else trace}
    span, _, options = rest.partition(";")
    if span.isdigit():
        fields[SPAN_KEY] = span
    if options.strip() in {"o=1", "o=0"}:
        fields[SAMPLED_KEY] = options.strip() == "o=1"
    return fields


class _StdoutLogger:
    """A structlog logger writing each rendered line to whatever sys.stdout is at the time."""

    def __init__(self, name: str = "", *_: Any) -> None:
        self.name = name

    def msg(self, message: str) -> None:
        sys.stdout.write(message + "\n")
        sys.stdout.flush()

    debug = info = warning = warn = error = critical = exception = log = failure = fatal = msg


class _StdoutHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The standard library's lines, written like structlog's to whatever sys.stdout is at the time:
    a handler holding the stdout of when logging was configured fails once that stream is closed
    (a test's capture, a rehearsal thread outliving it)."""

    @property
    def stream(self) -> Any:
        return sys.stdout

    @stream.setter
    def stream(self, _: Any) -> None:
        pass  # StreamHandler assigns its stream; there is none to keep


def configure_logging(level: str = "INFO", fmt: str = "json") -> None:
    """Route structlog and the standard library (uvicorn, SQLAlchemy) through one JSON renderer."""
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="time"),
        structlog.processors.format_exc_info,
    ]
    renderer: Any
    if fmt == "json":
        shared.append(_cloud_logging_fields)
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=False)

    structlog.configure(
        # structlog's own lines are rendered and written directly: the standard library's
        # records, handlers and formatter cost about a tenth of the API's hot path.
        processors=[*shared, renderer],
        # Filtered first: a line below the level costs a method call, not the processors.
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=_StdoutLogger,
        cache_logger_on_first_use=True,
    )
    handler = _StdoutHandler()
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # The access line comes from our own middleware, with the trace attached.
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    logging.getLogger("uvicorn.access").disabled = True
