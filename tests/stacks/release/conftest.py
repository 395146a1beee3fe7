"""A local HTTP server standing in for a Google API, answering through one handler function."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest


@dataclass(frozen=True)
class Request:
    """One request as the server received it."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # names in lower case

    def param(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[0] if values else None


Handler = Callable[[Request], tuple[int, Any]]


@dataclass
class Served:
    """A running double: its base URL and every request it received."""

    url: str
    requests: list[Request] = field(default_factory=list)


def google_error(status: int, code: str, message: str) -> tuple[int, dict[str, Any]]:
    """An error as Google APIs answer it (https://cloud.google.com/apis/design/errors#http_mapping)."""
    return status, {"error": {"code": status, "message": message, "status": code}}


@pytest.fixture
def serve() -> Iterator[Callable[[Handler], Served]]:
    """Start doubles on 127.0.0.1 (free ports); each answers with its handler's (status, JSON)."""
    servers: list[ThreadingHTTPServer] = []

    def start(handle: Handler) -> Served:
        served = Served("")

        class Http(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
                url = urlparse(self.path)
                request = Request(
                    "GET",
                    url.path,
                    parse_qs(url.query, keep_blank_values=True),
                    {k.lower(): v for k, v in self.headers.items()},
                )
                served.requests.append(request)
                status, body = handle(request)
                payload = (body if isinstance(body, str) else json.dumps(body)).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Http)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        served.url = f"http://127.0.0.1:{server.server_port}"
        return served

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()
