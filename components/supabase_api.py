"""A Supabase project as a Pulumi dynamic resource, over the Supabase Management API.

Every path, body and response field below follows the Management API's published OpenAPI
description (https://api.supabase.com/api/v1-json; copies in the public repositories
supabase/supabase `apps/docs/spec/api_v1_openapi.json` and supabase/cli
`packages/api/src/generated/openapi.json`):

    POST   /v1/projects                            V1CreateProjectBody -> 201 V1ProjectResponse
    GET    /v1/projects/{ref}                      -> V1ProjectWithDatabaseResponse (status, database.host)
    PATCH  /v1/projects/{ref}                      V1UpdateProjectBody (name only)
    PATCH  /v1/projects/{ref}/database/password    V1UpdatePasswordBody
    DELETE /v1/projects/{ref}
    GET    /v1/projects/{ref}/config/database/pooler  -> [SupavisorConfigResponse]

A new project reports ACTIVE_HEALTHY before its pooler lets anyone in: Supavisor answers "Tenant or
user not found" (SQLSTATE XX000) until it knows the project (supabase/cli#4277, on a new project;
"The Postgres core can report Healthy while Supavisor's tenant registration is still catching up",
https://github.com/orgs/supabase/discussions/51649), and a new password reaches it after the
database has it. So create, and an update that sets a new password, end with a login through the
pooler (the session port, which the migrations use first), tried again until POOLER_TIMEOUT_SECONDS.

The engine runs this provider in its own process after unpickling it (dill), so the provider
holds only plain values; the HTTP client is made per call and the access token arrives through
`configure`, from the stack's configuration, so it never enters the resource's inputs, outputs
or state (https://github.com/pulumi/pulumi/pull/17673: dynamic providers receive the stack
config in `configure`).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

import asyncpg
import pulumi
import pulumi.dynamic as dynamic
from pulumi.runtime import rpc

from components.dynamic import DynamicResource
from components.rest import ApiError, NotFoundError, RestClient
from components.rules import SUPABASE_REGIONS

API_URL = "https://api.supabase.com"
TOKEN_CONFIG_KEY = "supabase:accessToken"  # noqa: S105 (a config key, not a token)
# The Supabase CLI's and the Terraform provider's variable, honoured as a fallback.
TOKEN_ENV = "SUPABASE_ACCESS_TOKEN"  # noqa: S105 (a variable's name, not a token)
# V1CreateProjectBody.region_selection (type "specific").code's enum, kept in components/rules.py.
REGIONS = SUPABASE_REGIONS
HEALTHY = "ACTIVE_HEALTHY"
# V1ProjectResponse.status values a new project never leaves on its own.
FAILED = frozenset({"INIT_FAILED", "REMOVED", "GOING_DOWN", "INACTIVE", "PAUSING", "PAUSE_FAILED"})
# Supavisor serves both modes on the pooler host: session on 5432, transaction on 6543. The
# pooler config reports the port of the project's default mode; the Supabase CLI derives the
# other one the same way (supabase/cli apps/cli-go/internal/link/link.go, updatePoolerConfig).
PORTS = {"transaction": 6543, "session": 5432}
# Inputs whose change needs a new project: a project cannot move organization or region.
REPLACE_ON = ("organization_slug", "region", "project_ref")
UPDATE_ON = ("name", "db_pass_sha256", "deletion_protection")
# How long a login through a new project's pooler may be refused before the step fails.
POOLER_TIMEOUT_SECONDS = 600.0
# What a refused login raises: the pooler's answer, or the network's.
LOGIN_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)


class SupabaseApiError(ApiError):
    """The Management API refused or failed a request; the message names the call and the answer."""


@dataclass(frozen=True)
class ProjectInputs:
    """The dynamic resource's inputs: create in `organization_slug`, or adopt `project_ref`."""

    name: str
    region: str
    organization_slug: str | None = None
    project_ref: str | None = None
    db_pass: pulumi.Input[str] | None = None
    deletion_protection: bool = True

    def props(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "region": self.region,
            "organization_slug": self.organization_slug,
            "project_ref": self.project_ref,
            "db_pass": pulumi.Output.secret(self.db_pass) if self.db_pass is not None else None,
            "deletion_protection": self.deletion_protection,
        }


@dataclass(frozen=True)
class PoolerLogin:
    """Where and as whom the migrations first log in: the pooler's session port."""

    host: str
    port: int
    user: str
    database: str
    password: str = field(repr=False)

    def __str__(self) -> str:
        return f"{self.user}@{self.host}:{self.port}/{self.database}"


def pooler_login(target: PoolerLogin, timeout: float = 10.0) -> None:
    """Log in through the pooler over TLS, as the DSNs do (sslmode=require), run `SELECT 1` and
    leave; raises one of LOGIN_ERRORS when refused."""

    async def attempt() -> None:
        conn = await asyncpg.connect(
            host=target.host,
            port=target.port,
            user=target.user,
            password=target.password,
            database=target.database,
            ssl="require",
            timeout=timeout,
            statement_cache_size=0,
        )
        try:
            await conn.execute("SELECT 1")
        finally:
            await conn.close(timeout=timeout)

    asyncio.run(attempt())


def input_problems(props: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(property, reason) for each invalid input; empty when the inputs can be sent."""
    problems: list[tuple[str, str]] = []
    name = props.get("name")
    if not isinstance(name, str) or not 1 <= len(name) <= 256:
        problems.append(("name", f"must be 1 to 256 characters, got {name!r}"))
    if props.get("region") not in REGIONS:
        problems.append(("region", f"{props.get('region')!r} is not one of {sorted(REGIONS)}"))
    creating, adopting = bool(props.get("organization_slug")), bool(props.get("project_ref"))
    if creating == adopting:
        problems.append(("organization_slug", "give exactly one of organization_slug or project_ref"))
    if creating and not props.get("db_pass"):
        problems.append(("db_pass", "creating a project needs its database password"))
    return problems


def known(value: Any) -> bool:
    """Whether an input is known: at preview the engine sends a sentinel for values still computed."""
    return value is not None and value != rpc.UNKNOWN


def password_digest(password: str) -> str:
    """What the state keeps of the password: enough to see it changed, never the password."""
    return hashlib.sha256(password.encode()).hexdigest()


class SupabaseProjectProvider(dynamic.ResourceProvider):
    """Create (and wait for), read, diff, update and delete a Supabase project."""

    def __init__(
        self,
        api_url: str = API_URL,
        *,
        poll_seconds: float = 10.0,
        ready_timeout_seconds: float = 900.0,
        attempts: int = 6,
        max_backoff_seconds: float = 60.0,
        request_timeout_seconds: float = 30.0,
        pooler_timeout_seconds: float = POOLER_TIMEOUT_SECONDS,
    ) -> None:
        super().__init__()
        self.api_url = api_url.rstrip("/")
        self.poll_seconds = poll_seconds
        self.ready_timeout_seconds = ready_timeout_seconds
        self.attempts = attempts
        self.max_backoff_seconds = max_backoff_seconds
        self.request_timeout_seconds = request_timeout_seconds
        self.pooler_timeout_seconds = pooler_timeout_seconds
        self.token: str | None = None
        self.sleep: Callable[[float], None] = time.sleep
        self.login: Callable[[PoolerLogin], None] = pooler_login

    def __getstate__(self) -> dict[str, Any]:
        # The serialized provider is stored in the state: never with a token in it.
        return {**self.__dict__, "token": None}

    # The engine's boundary -------------------------------------------------------------------

    def configure(self, req: dynamic.ConfigureRequest) -> None:
        value = req.config.get(TOKEN_CONFIG_KEY)
        self.token = str(value) if value else os.environ.get(TOKEN_ENV) or None

    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> dynamic.CheckResult:
        failures = [dynamic.CheckFailure(prop, reason) for prop, reason in input_problems(news)]
        inputs = {k: v for k, v in news.items() if k != "db_pass"}
        if news.get("db_pass"):
            inputs["db_pass"] = news["db_pass"]
            # Unknown at preview (a generated password): its digest is unknown too, not a hash of
            # the engine's placeholder.
            known_pass = known(news["db_pass"])
            inputs["db_pass_sha256"] = password_digest(str(news["db_pass"])) if known_pass else rpc.UNKNOWN
        return dynamic.CheckResult(inputs, failures)

    def create(self, props: dict[str, Any]) -> dynamic.CreateResult:
        with self._client() as client:
            if props.get("project_ref"):
                ref = str(props["project_ref"])
                try:
                    self._call(client, "GET", f"/v1/projects/{ref}")
                except _NotFoundError as exc:
                    raise SupabaseApiError(
                        f"Supabase project {ref} does not exist, or the access token cannot see it"
                    ) from exc
            else:
                created = self._call(client, "POST", "/v1/projects", json=self._create_body(props))
                ref = str(created["ref"])
            project = self._wait_until_healthy(client, ref)
            pooler = self._primary_pooler(client, ref, wait=True)
        outputs = _outputs(project, pooler, props)
        if props.get("db_pass"):  # created here; an adopted project's pooler has long been serving
            # A failed create records nothing, so the next `pulumi up` would make another project.
            then = (
                f"Pulumi records nothing for a failed create: adopt the project (liftoff:supabase.mode"
                f" adopt, projectRef {ref}) or delete it before running `pulumi up` again"
            )
            self._wait_for_login(ref, outputs, str(props["db_pass"]), then)
        return dynamic.CreateResult(ref, outputs)

    def read(self, id_: str, props: dict[str, Any]) -> dynamic.ReadResult:
        with self._client() as client:
            try:
                project = self._call(client, "GET", f"/v1/projects/{id_}")
            except _NotFoundError:
                # Deleted outside Pulumi: an empty id tells the engine the resource is gone.
                return dynamic.ReadResult("", {})
            # A paused project has no pooler to report; keep what was known until it is back.
            pooler = self._primary_pooler(client, id_, wait=False) or _known_pooler(props)
            return dynamic.ReadResult(id_, _outputs(project, pooler, props))

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> dynamic.DiffResult:
        news = {**news, "db_pass_sha256": self._digest_of(news)}
        # An adopted project stays as its owner made it: only which project, and protection, count.
        compared = (
            (*REPLACE_ON, "deletion_protection") if news.get("project_ref") else (*REPLACE_ON, *UPDATE_ON)
        )
        changed = [k for k in compared if _differs(olds.get(k), news.get(k))]
        replaces = [k for k in changed if k in REPLACE_ON]
        return dynamic.DiffResult(changes=bool(changed), replaces=replaces, delete_before_replace=False)

    def update(self, id_: str, olds: dict[str, Any], news: dict[str, Any]) -> dynamic.UpdateResult:
        with self._client() as client:
            adopted = bool(news.get("project_ref"))
            if not adopted and news.get("name") != olds.get("name"):
                self._call(client, "PATCH", f"/v1/projects/{id_}", json={"name": news["name"]})
            digest = self._digest_of(news)
            new_password = not adopted and news.get("db_pass") and digest != olds.get("db_pass_sha256")
            if new_password:
                self._call(
                    client,
                    "PATCH",
                    f"/v1/projects/{id_}/database/password",
                    json={"password": news["db_pass"]},
                )
            project = self._wait_until_healthy(client, id_)
            pooler = self._primary_pooler(client, id_, wait=True)
        outputs = _outputs(project, pooler, news)
        if new_password:  # the pooler learns a new password after the database does
            self._wait_for_login(id_, outputs, str(news["db_pass"]), "run `pulumi up` again")
        return dynamic.UpdateResult(outputs)

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        # The engine never tells a provider about the `protect` option (it refuses to call
        # Delete on a protected resource itself), so the component mirrors `protect` into
        # `deletion_protection`: after `pulumi state unprotect` the project is still kept until
        # the program turns protection off and that change is applied.
        if props.get("deletion_protection", True):
            raise SupabaseApiError(
                f"Supabase project {id_} has deletion_protection on: set protect=False on the "
                "SupabaseDatabase and run `pulumi up` first, then delete"
            )
        if props.get("project_ref"):
            return  # Adopted, not created here: forgetting it is all a delete may do.
        with self._client() as client:
            try:
                self._call(client, "DELETE", f"/v1/projects/{id_}")
            except _NotFoundError:
                return

    # Steps ----------------------------------------------------------------------------------

    @staticmethod
    def _create_body(props: Mapping[str, Any]) -> dict[str, Any]:
        # `region` and `organization_id` are deprecated in V1CreateProjectBody; `plan` is ignored
        # (the plan belongs to the organization), so neither is sent.
        return {
            "name": props["name"],
            "organization_slug": props["organization_slug"],
            "db_pass": props["db_pass"],
            "region_selection": {"type": "specific", "code": props["region"]},
        }

    @staticmethod
    def _digest_of(props: Mapping[str, Any]) -> str | None:
        if not props.get("db_pass"):
            return None
        return password_digest(str(props["db_pass"])) if known(props["db_pass"]) else rpc.UNKNOWN

    def _wait_until_healthy(self, client: RestClient, ref: str) -> dict[str, Any]:
        """Poll until the project is ACTIVE_HEALTHY; migrations must not meet a half-made database."""
        deadline = time.monotonic() + self.ready_timeout_seconds
        while True:
            project: dict[str, Any] = self._call(client, "GET", f"/v1/projects/{ref}")
            status = str(project.get("status"))
            if status == HEALTHY:
                return project
            if status in FAILED:
                raise SupabaseApiError(f"Supabase project {ref} is {status}, not {HEALTHY}")
            if time.monotonic() + self.poll_seconds > deadline:
                raise SupabaseApiError(
                    f"Supabase project {ref} is still {status} after {self.ready_timeout_seconds:.0f}s; "
                    f"it exists: run `pulumi up` again, or adopt it with projectRef {ref}"
                )
            self.sleep(self.poll_seconds)

    def _primary_pooler(self, client: RestClient, ref: str, *, wait: bool) -> dict[str, Any]:
        """The PRIMARY database's Supavisor config: the host is the pooler cluster the project got."""
        deadline = time.monotonic() + self.ready_timeout_seconds
        while True:
            configs = self._call(client, "GET", f"/v1/projects/{ref}/config/database/pooler")
            for config in configs if isinstance(configs, list) else []:
                if config.get("database_type") == "PRIMARY" and config.get("db_host"):
                    return dict(config)
            if not wait:
                return {}
            if time.monotonic() + self.poll_seconds > deadline:
                raise SupabaseApiError(f"Supabase project {ref} has no PRIMARY pooler configuration")
            self.sleep(self.poll_seconds)

    def _wait_for_login(self, ref: str, outputs: Mapping[str, Any], password: str, then: str) -> None:
        """Until a login through the project's pooler succeeds, or POOLER_TIMEOUT_SECONDS pass."""
        target = PoolerLogin(
            host=str(outputs["pooler_host"]),
            port=int(outputs["pooler_session_port"]),
            user=str(outputs["pooler_user"]),
            database=str(outputs["pooler_database"]),
            password=password,
        )
        started = time.monotonic()
        while True:
            try:
                self.login(target)
                return
            except LOGIN_ERRORS as error:
                refused = f"{type(error).__name__}: {error}"
            waited = time.monotonic() - started
            if waited + self.poll_seconds > self.pooler_timeout_seconds:
                raise SupabaseApiError(
                    f"Supabase project {ref}: its pooler {target.host}:{target.port} still refuses"
                    f" {target.user} after {waited:.0f}s ({refused}). A new project's pooler, or a new"
                    f" password, can take minutes to be accepted; if it is not a wrong password, {then}"
                )
            pulumi.log.info(f"Supabase project {ref}: the pooler refuses {target} for now ({refused})")
            self.sleep(self.poll_seconds)

    # HTTP -----------------------------------------------------------------------------------

    def _client(self) -> RestClient:
        token = self.token
        if not token:
            raise SupabaseApiError(
                "no Supabase access token: pulumi config set --secret "
                f"{TOKEN_CONFIG_KEY} sbp_... (or set {TOKEN_ENV})"
            )
        return RestClient(
            self.api_url,
            lambda: token,
            attempts=self.attempts,
            max_backoff_seconds=self.max_backoff_seconds,
            timeout_seconds=self.request_timeout_seconds,
            sleep=self.sleep,
        )

    def _call(self, client: RestClient, method: str, path: str, json: Any = None) -> Any:
        """One API call (components/rest.py retries what is safe); errors as SupabaseApiError."""
        try:
            return client.call(method, path, json=json)
        except NotFoundError as exc:
            raise _NotFoundError(str(exc), 404) from exc
        except SupabaseApiError:
            raise
        except ApiError as exc:
            raise SupabaseApiError(str(exc), exc.status) from exc


class SupabaseProject(DynamicResource, module="supabase", name="Project"):
    """A Supabase project; its outputs include the Supavisor pooler the project was given."""

    TYPE: ClassVar[str] = "pulumi-python:dynamic/supabase:Project"
    # What the provider reads: a dynamic resource has no schema to check them against.
    PROPERTIES: ClassVar[frozenset[str]] = frozenset(f.name for f in fields(ProjectInputs))

    ref: pulumi.Output[str]
    pooler_host: pulumi.Output[str]
    pooler_user: pulumi.Output[str]
    pooler_database: pulumi.Output[str]
    pooler_transaction_port: pulumi.Output[int]
    pooler_session_port: pulumi.Output[int]
    database_host: pulumi.Output[str]
    status: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        inputs: ProjectInputs,
        opts: pulumi.ResourceOptions | None = None,
        provider: SupabaseProjectProvider | None = None,
    ) -> None:
        outputs = dict.fromkeys(
            (
                "ref",
                "status",
                "database_host",
                "pooler_host",
                "pooler_user",
                "pooler_database",
                "pooler_transaction_port",
                "pooler_session_port",
                "db_pass_sha256",
            )
        )
        super().__init__(provider or SupabaseProjectProvider(), name, {**inputs.props(), **outputs}, opts)


class _NotFoundError(SupabaseApiError):
    pass


def _outputs(
    project: Mapping[str, Any], pooler: Mapping[str, Any], props: Mapping[str, Any]
) -> dict[str, Any]:
    """The resource's state: what the API reports, and the inputs diff compares against."""
    mode = str(pooler.get("pool_mode", "transaction"))
    port = int(pooler["db_port"])
    digest = props.get("db_pass_sha256") or (
        password_digest(str(props["db_pass"])) if props.get("db_pass") else None
    )
    return {
        "ref": str(project["ref"]),
        "name": project.get("name"),
        # The region as asked for: a project never moves, and diff must not replace a database
        # over how the API happens to spell its region.
        "region": props.get("region") or project.get("region"),
        "status": project.get("status"),
        "organization_slug": props.get("organization_slug"),
        "project_ref": props.get("project_ref"),
        "deletion_protection": bool(props.get("deletion_protection", True)),
        "db_pass_sha256": digest,
        "database_host": (project.get("database") or {}).get("host"),
        "pooler_host": pooler["db_host"],
        "pooler_user": _pooler_user(pooler, str(project["ref"])),
        "pooler_database": pooler["db_name"],
        "pooler_transaction_port": port if mode == "transaction" else PORTS["transaction"],
        "pooler_session_port": port if mode == "session" else PORTS["session"],
    }


def _pooler_user(pooler: Mapping[str, Any], ref: str) -> str:
    """Supavisor routes on the user `<role>.<project ref>`; the connection string carries it whole."""
    # Split by hand: the string holds a "[YOUR-PASSWORD]" placeholder, which URL parsers reject.
    userinfo, at, _ = str(pooler.get("connection_string") or "").partition("://")[2].rpartition("@")
    user = (userinfo.split(":", 1)[0] if at else "") or str(pooler.get("db_user") or "")
    return user if "." in user else f"{user or 'postgres'}.{ref}"


def _known_pooler(props: Mapping[str, Any]) -> dict[str, Any]:
    """The pooler as last recorded in the state, in the API's shape."""
    return {
        "db_host": props.get("pooler_host"),
        "connection_string": f"postgresql://{props.get('pooler_user')}@host/",
        "db_name": props.get("pooler_database"),
        "db_port": props.get("pooler_transaction_port") or PORTS["transaction"],
        "pool_mode": "transaction",
    }


def _differs(old: Any, new: Any) -> bool:
    return (old or None) != (new or None)
