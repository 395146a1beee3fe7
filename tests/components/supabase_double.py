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
import string
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

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
