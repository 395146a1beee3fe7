"""A local stand-in for the Supabase Management API, on 127.0.0.1, answering in its published shapes.

Paths, bodies and statuses follow the Management API's OpenAPI description (supabase/cli
`packages/api/src/generated/openapi.json`, supabase/supabase `apps/docs/spec/api_v1_openapi.json`):
V1CreateProjectBody (required db_pass, name, organization_slug; no other keys), V1ProjectResponse,
V1ProjectWithDatabaseResponse, V1UpdateProjectBody, V1UpdatePasswordBody, V1ProjectRefResponse and
SupavisorConfigResponse. Faults (429 with Retry-After, 5xx) are scripted per request.
"""

from __future__ import annotations

import random
import re
import socket
import socketserver
import ssl
import string
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.http_double import Reply, Request, serve_json

TOKEN = "sbp_0123456789abcdef0123456789abcdef01234567"
REF = re.compile(r"^[a-z]{20}$")
CREATE_KEYS = {
    "db_pass",
    "name",
    "organization_id",
    "organization_slug",
    "plan",
    "region",
    "region_selection",
    "kps_enabled",
    "desired_instance_size",
    "template_url",
}


@dataclass
class Fault:
    """A scripted answer for the next matching request(s)."""

    method: str
    path: str
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    times: int = 1


@dataclass
class Project:
    ref: str
    name: str
    organization_slug: str
    region: str
    db_pass: str
    # GETs still to answer COMING_UP before the project is ACTIVE_HEALTHY.
    polls_until_healthy: int
    status: str = "COMING_UP"

    def body(self, with_database: bool) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": self.ref,
            "ref": self.ref,
            "organization_id": self.organization_slug,
            "organization_slug": self.organization_slug,
            "name": self.name,
            "region": self.region,
            "created_at": "2026-11-24T05:00:00.000Z",
            "status": self.status,
        }
        if with_database:
            body["database"] = {
                "host": f"db.{self.ref}.supabase.co",
                "version": "17.4.1.054",
                "postgres_engine": "17",
                "release_channel": "ga",
            }
        return body


@dataclass
class Seen:
    method: str
    path: str
    body: Any
    authorization: str | None


class ManagementApi:
    """The double's state: projects, scripted faults, and every request it saw."""

    def __init__(
        self, polls_until_healthy: int = 3, pooler_host: str = "aws-1-eu-west-1.pooler.supabase.com"
    ):
        self.polls_until_healthy = polls_until_healthy
        self.pooler_host = pooler_host
        self.projects: dict[str, Project] = {}
        self.faults: list[Fault] = []
        self.seen: list[Seen] = []
        self.lock = threading.Lock()
        self.url = ""

    def fail(self, method: str, path: str, status: int, times: int = 1, **headers: str) -> None:
        self.faults.append(
            Fault(method, path, status, {k.replace("_", "-"): v for k, v in headers.items()}, times)
        )

    def add(
        self, name: str = "existing", region: str = "eu-west-1", status: str = "ACTIVE_HEALTHY"
    ) -> Project:
        project = Project(_ref(), name, "acme-org", region, "owner-password", 0, status)
        self.projects[project.ref] = project
        return project

    def calls(self, method: str, prefix: str = "/v1/projects") -> list[Seen]:
        return [s for s in self.seen if s.method == method and s.path.startswith(prefix)]

    # Dispatch ------------------------------------------------------------------------------

    def handle(
        self, method: str, path: str, body: Any, authorization: str | None
    ) -> tuple[int, dict[str, str], Any]:
        with self.lock:
            self.seen.append(Seen(method, path, body, authorization))
            if authorization != f"Bearer {TOKEN}":
                return 401, {}, {"message": "Unauthorized"}
            for fault in self.faults:
                if fault.method == method and fault.path == path and fault.times > 0:
                    fault.times -= 1
                    return fault.status, fault.headers, {"message": f"scripted {fault.status}"}
            return self._route(method, path, body)

    def _route(self, method: str, path: str, body: Any) -> tuple[int, dict[str, str], Any]:
        parts = path.strip("/").split("/")
        if parts == ["v1", "projects"] and method == "POST":
            return self._create(body)
        if len(parts) < 3 or parts[:2] != ["v1", "projects"] or not REF.match(parts[2]):
            return 404, {}, {"message": "Not found"}
        project = self.projects.get(parts[2])
        if project is None:
            return 404, {}, {"message": f"Project {parts[2]} not found"}
        rest = parts[3:]
        if rest == [] and method == "GET":
            if project.polls_until_healthy > 0:
                project.polls_until_healthy -= 1
            elif project.status == "COMING_UP":
                project.status = "ACTIVE_HEALTHY"
            return 200, {}, project.body(with_database=True)
        if rest == [] and method == "PATCH":
            name = (body or {}).get("name")
            if not isinstance(name, str) or not 1 <= len(name) <= 256 or set(body) != {"name"}:
                return 400, {}, {"message": "V1UpdateProjectBody: name (1-256 characters) only"}
            project.name = name
            return 200, {}, {"id": 1, "ref": project.ref, "name": project.name}
        if rest == [] and method == "DELETE":
            del self.projects[project.ref]
            return 200, {}, {"id": 1, "ref": project.ref, "name": project.name}
        if rest == ["database", "password"] and method == "PATCH":
            password = (body or {}).get("password")
            if not isinstance(password, str) or len(password) < 4:
                return 400, {}, {"message": "V1UpdatePasswordBody: password of at least 4 characters"}
            project.db_pass = password
            return 200, {}, {"message": "ok"}
        if rest == ["config", "database", "pooler"] and method == "GET":
            return 200, {}, self._pooler(project)
        return 404, {}, {"message": "Not found"}

    def _create(self, body: Any) -> tuple[int, dict[str, str], Any]:
        if not isinstance(body, dict):
            return 400, {}, {"message": "body must be a JSON object"}
        missing = {"db_pass", "name", "organization_slug"} - set(body)
        extra = set(body) - CREATE_KEYS
        if missing or extra:
            return (
                400,
                {},
                {"message": f"V1CreateProjectBody: missing {sorted(missing)}, unknown {sorted(extra)}"},
            )
        if "region" in body and "region_selection" in body:
            return 400, {}, {"message": "Only one of region or region_selection can be specified"}
        selection = body.get("region_selection") or {}
        region = selection.get("code") if selection.get("type") == "specific" else body.get("region")
        if not region:
            return 400, {}, {"message": "a region is required"}
        project = Project(
            _ref(), body["name"], body["organization_slug"], region, body["db_pass"], self.polls_until_healthy
        )
        self.projects[project.ref] = project
        return 201, {}, project.body(with_database=False)

    def _pooler(self, project: Project) -> list[dict[str, Any]]:
        if project.status != "ACTIVE_HEALTHY":
            return []
        user = f"postgres.{project.ref}"
        return [
            {
                "identifier": project.ref,
                "database_type": "PRIMARY",
                "is_using_scram_auth": True,
                "db_user": "postgres",
                "db_host": self.pooler_host,
                "db_port": 6543,
                "db_name": "postgres",
                "connection_string": f"postgresql://{user}:[YOUR-PASSWORD]@{self.pooler_host}:6543/postgres",
                "connectionString": f"postgresql://{user}:[YOUR-PASSWORD]@{self.pooler_host}:6543/postgres",
                "default_pool_size": 15,
                "max_client_conn": 200,
                "pool_mode": "transaction",
            }
        ]


def _ref() -> str:
    return "".join(random.choices(string.ascii_lowercase, k=20))


@contextmanager
def serve(api: ManagementApi) -> Iterator[ManagementApi]:
    """Serve `api` over HTTP on a free loopback port for the duration of the block."""

    def answer(request: Request) -> Reply:
        status, headers, payload = api.handle(
            request.method, request.target, request.body, request.headers.get("authorization")
        )
        return Reply(status, payload, headers)

    with serve_json(answer) as served:
        api.url = served.url
        yield api


# Supavisor, the project's pooler, on the Postgres wire protocol -----------------------------------
#
# What a client meets at the pooler host (https://www.postgresql.org/docs/current/protocol-flow.html):
# an SSLRequest answered 'S' and TLS, a StartupMessage whose user is `postgres.<ref>`, then either
# an ErrorResponse or a password exchange. Until Supavisor knows a new project it answers
# "Tenant or user not found" (SQLSTATE XX000: supabase/cli#4277, on a new project); a new password
# reaches it after the database has it, so it refuses the new one for a while (28P01).

SSL_REQUEST = 80877103
PROTOCOL_3 = 196608


def _message(kind: bytes, payload: bytes) -> bytes:
    return kind + struct.pack("!I", len(payload) + 4) + payload


def _error(code: str, text: str) -> bytes:
    fields = b"".join(
        key + value.encode() + b"\0"
        for key, value in ((b"S", "FATAL"), (b"V", "FATAL"), (b"C", code), (b"M", text))
    )
    return _message(b"E", fields + b"\0")


def self_signed(directory: Path) -> ssl.SSLContext:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pooler.supabase.test")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "pooler.crt", directory / "pooler.key"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    return context


class Supavisor:
    """The pooler of every project the Management API double holds, on one loopback port.

    `unknown_for` logins of a project are answered "Tenant or user not found" before the pooler
    knows it, and `stale_password_for` logins with a new password are refused after a change.
    """

    def __init__(self, api: ManagementApi, tls: ssl.SSLContext) -> None:
        self.api = api
        self.tls = tls
        self.unknown_for = 0
        self.stale_password_for = 0
        self.logins: list[tuple[str, str]] = []  # (user, outcome)
        self._known: dict[str, int] = {}  # ref -> logins refused so far
        self._passwords: dict[str, str] = {}  # ref -> the password the pooler has
        self._stale: dict[str, int] = {}  # ref -> logins with a newer password refused so far
        self._server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]

    @contextmanager
    def running(self) -> Iterator[Supavisor]:
        thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        thread.start()
        try:
            yield self
        finally:
            self._server.shutdown()
            self._server.server_close()

    def _handler(self) -> type[socketserver.BaseRequestHandler]:
        pooler = self

        class Client(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                connection: socket.socket = self.request
                try:
                    length, code = struct.unpack("!II", _read(connection, 8))
                    if code != SSL_REQUEST:
                        connection.sendall(_error("08P01", "SSL connection is required"))
                        return
                    connection.sendall(b"S")
                    with pooler.tls.wrap_socket(connection, server_side=True) as secure:
                        pooler._session(secure)
                except (OSError, ssl.SSLError, struct.error):
                    pass  # the client went away: nobody to answer

        return Client

    def _session(self, connection: ssl.SSLSocket) -> None:
        length = struct.unpack("!I", _read(connection, 4))[0]
        body = _read(connection, length - 4)
        if struct.unpack("!I", body[:4])[0] != PROTOCOL_3:
            connection.sendall(_error("08P01", "unsupported protocol"))
            return
        parts = body[4:].split(b"\0")
        params = {parts[i].decode(): parts[i + 1].decode() for i in range(0, len(parts) - 1, 2) if parts[i]}
        user = params.get("user", "")
        outcome = self._login(connection, user)
        self.logins.append((user, outcome))
        if outcome == "ok":
            self._serve(connection)

    def _login(self, connection: ssl.SSLSocket, user: str) -> str:
        role, _, ref = user.partition(".")
        with self.api.lock:
            project = self.api.projects.get(ref)
            refused = self._known.get(ref, 0)
            if project is None or role != "postgres" or refused < self.unknown_for:
                self._known[ref] = refused + 1
                connection.sendall(_error("XX000", "Tenant or user not found"))
                return "unknown"
            expected = project.db_pass
        connection.sendall(_message(b"R", struct.pack("!I", 3)))  # AuthenticationCleartextPassword
        kind = _read(connection, 1)
        length = struct.unpack("!I", _read(connection, 4))[0]
        password = _read(connection, length - 4).rstrip(b"\0").decode()
        if kind != b"p" or not self._accepts(ref, password, expected):
            connection.sendall(_error("28P01", f'password authentication failed for user "{role}"'))
            return "bad password"
        return "ok"

    def _accepts(self, ref: str, password: str, expected: str) -> bool:
        if password != expected:
            return False
        known = self._passwords.setdefault(ref, expected)
        if known == expected:
            return True
        refused = self._stale.get(ref, 0)
        if refused < self.stale_password_for:  # the new password has not reached the pooler yet
            self._stale[ref] = refused + 1
            return False
        self._passwords[ref] = expected
        self._stale.pop(ref, None)
        return True

    def _serve(self, connection: ssl.SSLSocket) -> None:
        status = [
            ("server_version", "17.4"),
            ("server_encoding", "UTF8"),
            ("client_encoding", "UTF8"),
            ("DateStyle", "ISO, MDY"),
            ("integer_datetimes", "on"),
            ("standard_conforming_strings", "on"),
        ]
        connection.sendall(
            _message(b"R", struct.pack("!I", 0))
            + b"".join(_message(b"S", k.encode() + b"\0" + v.encode() + b"\0") for k, v in status)
            + _message(b"K", struct.pack("!II", 1, 2))
            + _message(b"Z", b"I")
        )
        while True:
            kind = _read(connection, 1)
            length = struct.unpack("!I", _read(connection, 4))[0]
            _read(connection, length - 4)
            if kind == b"X":
                return
            if kind != b"Q":
                connection.sendall(_error("0A000", "the double answers simple queries only"))
                return
            row = _message(
                b"T", struct.pack("!H", 1) + b"?column?\0" + struct.pack("!IHIhih", 0, 0, 23, 4, -1, 0)
            )
            data = _message(b"D", struct.pack("!HI", 1, 1) + b"1")
            connection.sendall(row + data + _message(b"C", b"SELECT 1\0") + _message(b"Z", b"I"))


def _read(connection: socket.socket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = connection.recv(count - len(data))
        if not chunk:
            raise ConnectionError("the client closed the connection")
        data += chunk
    return data


@contextmanager
def supavisor(api: ManagementApi, directory: Path) -> Iterator[Supavisor]:
    """A pooler for `api`'s projects on a free loopback port, with TLS, for the duration of the block."""
    with Supavisor(api, self_signed(directory)).running() as pooler:
        yield pooler
