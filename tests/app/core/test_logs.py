"""Log lines in Cloud Logging's structured format, linked to the request's trace."""

from __future__ import annotations

import io
import json
import logging
import sys

import pytest

from app.core.logs import TRACE_KEY, configure_logging, parse_trace_context

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("header", "project", "expected"),
    [
        (
            "105445aa7843bc8bf206b12000100000/1;o=1",
            "proj",
            {
                TRACE_KEY: "projects/proj/traces/105445aa7843bc8bf206b12000100000",
                "logging.googleapis.com/spanId": "1",
                "logging.googleapis.com/trace_sampled": True,
            },
        ),
        ("abc123", None, {TRACE_KEY: "abc123"}),
        ("", "proj", {}),
        (None, "proj", {}),
        ("not hex!/1", "proj", {}),
    ],
)
def test_parse_trace_context(header, project, expected):
    assert parse_trace_context(header, project) == expected


def test_standard_library_lines_follow_stdout_after_its_stream_closes(monkeypatch, capsys):
    """A thread that outlives the stdout logging was configured with still logs, to today's."""
    configured_with = io.StringIO()
    monkeypatch.setattr(sys, "stdout", configured_with)
    configure_logging("INFO", "json")
    configured_with.close()
    now = io.StringIO()
    monkeypatch.setattr(sys, "stdout", now)

    logging.getLogger("httpx").info("HTTP Request: GET /v1/generations 200")

    assert "Logging error" not in capsys.readouterr().err
    (line,) = [json.loads(line) for line in now.getvalue().splitlines()]
    assert line["message"] == "HTTP Request: GET /v1/generations 200"


def test_json_lines_have_severity_message_and_time(capsys):
    configure_logging("INFO", "json")
    logging.getLogger("uvicorn.error").warning("from the standard library")
    import structlog

    structlog.get_logger("t").info("from structlog", job="j1")
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines[0]["severity"] == "WARNING"
    assert lines[0]["message"] == "from the standard library"
    assert lines[1]["severity"] == "INFO"
    assert lines[1]["message"] == "from structlog"
    assert lines[1]["job"] == "j1"
    for line in lines:
        assert line["time"].endswith("Z")


async def test_request_logs_carry_the_trace(client, capsys, settings):
    configure_logging("INFO", "json")
    trace = "105445aa7843bc8bf206b12000100000"
    await client.get("/health", headers={"X-Cloud-Trace-Context": f"{trace}/7;o=1"})
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    access = [line for line in lines if line["message"] == "request"]
    assert access, lines
    assert access[-1][TRACE_KEY] == trace
    assert access[-1]["status"] == 200
    assert access[-1]["route"] == "/health"
