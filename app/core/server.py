"""The HTTP server's protocol: uvicorn's httptools protocol, held to a header size and a deadline.

uvicorn bounds neither with httptools (`h11_max_incomplete_event_size` applies to h11 only), and
it times out only idle keep-alive connections: a client may trickle a request for ever. Here a
request line and headers over the limit get 431, and a request not fully received within the
deadline gets 408 (or the connection closed, once a response has started).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

# Bytes a request may carry past its header limit in one read before it is cut off unparsed.
HIGH_WATER_BODY = 65_536


def _raw_response(status: int, reason: str, code: str, message: str) -> bytes:
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode("latin-1") + body


class _RejectedError(Exception):
    """Raised inside a parser callback to stop parsing a request that is being refused."""


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """HttpToolsProtocol with a limit on header bytes and a deadline on reading each request."""

    max_header_bytes = 16_384
    request_timeout = 15.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_bytes = 0
        self._raw_header_bytes = 0
        self._in_headers = True
        self._deadline: asyncio.TimerHandle | None = None
        self._refusal: bytes | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # A connection that never sends a whole first request is held to the deadline too.
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._in_headers:
            self._raw_header_bytes += len(data)
        super().data_received(data)
        # The parser buffers a header until its line ends: count what it holds, too.
        if self._in_headers and self._raw_header_bytes > self.max_header_bytes + HIGH_WATER_BODY:
            self._send(self._too_large())

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_headers = True
        self._header_bytes = 0
        if self._deadline is None:
            self._arm()

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        self._count(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        super().on_header(name, value)
        self._count(len(name) + len(value) + 4)

    def on_headers_complete(self) -> None:
        self._in_headers = False
        self._raw_header_bytes = 0
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    def send_400_response(self, msg: str) -> None:
        # uvicorn answers any error raised in a parser callback with 400: ours carry their own.
        if self._refusal is not None:
            self._send(self._refusal)
        else:
            super().send_400_response(msg)

    def _count(self, size: int) -> None:
        self._header_bytes += size
        if self._header_bytes > self.max_header_bytes:
            self._refusal = self._too_large()
            raise _RejectedError

    def _too_large(self) -> bytes:
        message = f"The request line and headers exceed {self.max_header_bytes} bytes."
        return _raw_response(431, "Request Header Fields Too Large", "headers_too_large", message)

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(self.request_timeout, self._timed_out)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _timed_out(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        if self.cycle is not None and self.cycle.response_started:
            self.transport.close()
            return
        message = f"The request was not received within {self.request_timeout:g} seconds."
        self._send(_raw_response(408, "Request Timeout", "request_timeout", message))

    def _send(self, response: bytes) -> None:
        self._disarm()
        if not self.transport.is_closing():
            self.transport.write(response)
            self.transport.close()


def guarded_protocol(max_header_bytes: int, request_timeout: float) -> type[GuardedHttpToolsProtocol]:
    """The protocol class for uvicorn's `http` option, with these limits."""
    return type(
        "ApiHttpProtocol",
        (GuardedHttpToolsProtocol,),
        {"max_header_bytes": max_header_bytes, "request_timeout": request_timeout},
    )
