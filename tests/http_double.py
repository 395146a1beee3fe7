"""One local HTTP server for the API doubles: each answers every request through one handler function."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse


@dataclass(frozen=True)
class Request:
    """One request as the server received it."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # names in lower case
    body: Any = None  # the JSON body decoded, a body that is not JSON as text, or None
    target: str = ""  # the path with its query string, as sent

    def param(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[0] if values else None


@dataclass(frozen=True)
class Reply:
    """An answer: a status, a JSON body (or raw text) and any extra headers."""

    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds to wait before answering, as a slow upstream does
    drop: bool = False  # cut the connection without an answer, as a crashed upstream does


Handler = Callable[[Request], Reply]


@dataclass
class Served:
    """A running double: its base URL and every request it received."""

    url: str
    requests: list[Request] = field(default_factory=list)


def google_error(status: int, code: str, message: str) -> Reply:
    """An error as Google APIs answer it (https://cloud.google.com/apis/design/errors#http_mapping)."""
    return Reply(status, {"error": {"code": status, "message": message, "status": code}})


def _decoded(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode(errors="replace")  # the double's handler decides whether that is an error


def _http_handler(handle: Handler, served: Served) -> type[BaseHTTPRequestHandler]:
    class Http(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            served.requests.append(self._request())
            reply = handle(served.requests[-1])
            time.sleep(reply.delay)
            if reply.drop:
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            body = reply.body
            payload = (body if isinstance(body, str) else json.dumps(body)).encode()
            try:
                self.send_response(reply.status)
                for key, value in {"Content-Type": "application/json", **reply.headers}.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up first (a timeout under test): nobody is left to answer

        def _request(self) -> Request:
            url = urlparse(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            return Request(
                self.command,
                url.path,
                parse_qs(url.query, keep_blank_values=True),
                {k.lower(): v for k, v in self.headers.items()},
                _decoded(raw),
                self.path,
            )

        do_GET = do_POST = do_PATCH = do_DELETE = _answer  # noqa: N815 (the stdlib's names)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # the tests read `Served.requests`, not stderr

    return Http


@contextmanager
def serve_json(handle: Handler) -> Iterator[Served]:
    """Serve `handle` on a free loopback port for the duration of the block."""
    served = Served("")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _http_handler(handle, served))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    served.url = f"http://127.0.0.1:{server.server_port}"
    try:
        yield served
    finally:
        server.shutdown()
        server.server_close()
