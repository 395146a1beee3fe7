"""The Supabase dynamic provider at the engine's boundary (create/read/diff/update/delete), against a
local HTTP double of the Management API."""

from __future__ import annotations

import base64
import email.utils
import re
import ssl
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import dill
import pytest
from pulumi.dynamic import Config, ConfigureRequest
from pulumi.dynamic.dynamic import serialize_provider

from components.supabase_api import (
    REPLACE_ON,
    PoolerLogin,
    SupabaseApiError,
    SupabaseProjectProvider,
    password_digest,
    pooler_login,
)
from tests.components.supabase_double import TOKEN, ManagementApi, Supavisor, self_signed, serve

pytestmark = pytest.mark.unit

PASSWORD = "generated-password-0123456789abcd"


@pytest.fixture
def api() -> Iterator[ManagementApi]:
    with serve(ManagementApi(polls_until_healthy=3)) as running:
        yield running


@pytest.fixture(scope="session")
def tls(tmp_path_factory: pytest.TempPathFactory) -> ssl.SSLContext:
    return self_signed(tmp_path_factory.mktemp("pooler"))


@pytest.fixture
def pooler(api: ManagementApi, tls: ssl.SSLContext) -> Iterator[Supavisor]:
    with Supavisor(api, tls).running() as running:
        yield running


class Resolver:
    """The provider's real login, with the pooler the API reported reached at the double, as DNS
    would resolve it; keeps what it was asked to log in to."""

    def __init__(self, pooler: Supavisor) -> None:
        self.pooler = pooler
        self.asked: list[PoolerLogin] = []

    def __call__(self, target: PoolerLogin) -> None:
        self.asked.append(target)
        pooler_login(replace(target, host="127.0.0.1", port=self.pooler.port), timeout=5.0)


class Recorder:
    """Stands in for time.sleep: notes each wait instead of spending it."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def make_provider(
    api: ManagementApi, pooler: Supavisor, token: str | None = TOKEN, **options: Any
) -> SupabaseProjectProvider:
    settings: dict[str, Any] = {"poll_seconds": 5.0, "ready_timeout_seconds": 600.0, "attempts": 4}
    provider = SupabaseProjectProvider(api.url, **{**settings, **options})
    provider.configure(ConfigureRequest(Config({"supabase:accessToken": token} if token else {}, "liftoff")))
    provider.sleep = Recorder()
    provider.login = Resolver(pooler)
    return provider


@pytest.fixture
def provider(api: ManagementApi, pooler: Supavisor) -> SupabaseProjectProvider:
    return make_provider(api, pooler)


def creating(**overrides: Any) -> dict[str, Any]:
    props = {
        "name": "liftoff-staging",
        "region": "eu-west-1",
        "organization_slug": "acme-org",
        "project_ref": None,
        "db_pass": PASSWORD,
        "deletion_protection": True,
        **overrides,
    }
    checked = SupabaseProjectProvider().check({}, props)
    assert checked.failures == []
    return checked.inputs


def waits(provider: SupabaseProjectProvider) -> list[float]:
    assert isinstance(provider.sleep, Recorder)
    return provider.sleep.waits


def test_create_waits_until_the_project_is_healthy_and_reads_the_pooler(api, provider):
    result = provider.create(creating())
    ref = result.id
    outs = result.outs or {}
    (post,) = api.calls("POST")
    # V1CreateProjectBody: the current fields only (region and plan are deprecated or ignored).
    assert post.body == {
        "name": "liftoff-staging",
        "organization_slug": "acme-org",
        "db_pass": PASSWORD,
        "region_selection": {"type": "specific", "code": "eu-west-1"},
    }
    assert len(api.calls("GET", f"/v1/projects/{ref}")) >= 4  # three COMING_UP answers, then healthy
    assert waits(provider) == [5.0, 5.0, 5.0]
    assert outs["status"] == "ACTIVE_HEALTHY"
    assert outs["ref"] == ref
    # From the pooler configuration, not from the region: this project landed on aws-1.
    assert outs["pooler_host"] == "aws-1-eu-west-1.pooler.supabase.com"
    assert outs["pooler_user"] == f"postgres.{ref}"
    assert (outs["pooler_transaction_port"], outs["pooler_session_port"]) == (6543, 5432)
    assert outs["pooler_database"] == "postgres"
    assert outs["database_host"] == f"db.{ref}.supabase.co"
    # The password and the token stay out of the state.
    text = repr(outs)
    assert PASSWORD not in text and TOKEN not in text
    assert outs["db_pass_sha256"] == password_digest(PASSWORD)
    assert all(s.authorization == f"Bearer {TOKEN}" for s in api.seen)


def test_create_gives_up_after_its_timeout_naming_the_project(api, pooler):
    api.polls_until_healthy = 10**6
    provider = make_provider(api, pooler, poll_seconds=0.02, ready_timeout_seconds=0.3)
    provider.sleep = time.sleep
    with pytest.raises(SupabaseApiError, match=r"is still COMING_UP after 0s; it exists: .* projectRef"):
        provider.create(creating())


def test_create_stops_on_a_failed_project(api, provider):
    api.polls_until_healthy = 1
    original = api._create

    def failing(body: Any) -> Any:
        status, headers, payload = original(body)
        api.projects[payload["ref"]].status = "INIT_FAILED"
        return status, headers, payload

    api._create = failing
    with pytest.raises(SupabaseApiError, match="is INIT_FAILED, not ACTIVE_HEALTHY"):
        provider.create(creating())


def test_rate_limit_is_waited_out_as_retry_after_says(api, provider):
    api.fail("POST", "/v1/projects", 429, Retry_After="7")
    result = provider.create(creating())
    assert len(api.calls("POST")) == 2
    assert len(api.projects) == 1
    assert waits(provider)[0] == 7.0
    assert result.id in api.projects


def test_server_errors_on_reads_are_retried_with_backoff(api, provider):
    project = api.add()
    api.fail("GET", f"/v1/projects/{project.ref}", 502, times=2)
    read = provider.read(project.ref, {"deletion_protection": True, "project_ref": project.ref})
    assert read.id == project.ref
    assert waits(provider) == [1.0, 2.0]


def test_a_server_error_on_create_is_not_repeated(api, provider):
    # The first POST may have made a project: sending it again could make a second one.
    api.fail("POST", "/v1/projects", 500)
    with pytest.raises(SupabaseApiError, match="POST /v1/projects: 500"):
        provider.create(creating())
    assert len(api.calls("POST")) == 1


def test_retries_are_bounded(api, provider):
    project = api.add()
    api.fail("GET", f"/v1/projects/{project.ref}", 503, times=100)
    with pytest.raises(SupabaseApiError, match="503"):
        provider.read(project.ref, {})
    assert len(api.calls("GET", f"/v1/projects/{project.ref}")) == 4


def test_a_project_deleted_outside_pulumi_reads_as_gone(api, provider):
    result = provider.read("abcdefghijklmnopqrst", {"name": "gone"})
    assert result.id == ""


def test_read_reports_drift(api, provider):
    created = provider.create(creating())
    api.projects[created.id].name = "renamed-in-the-dashboard"
    outs = provider.read(created.id, created.outs or {}).outs or {}
    assert outs["name"] == "renamed-in-the-dashboard"
    change = provider.diff(created.id, outs, creating())
    assert change.changes is True and change.replaces == []


def test_diff_names_what_replaces_and_what_updates(api, provider):
    created = provider.create(creating())
    olds = created.outs or {}
    assert provider.diff(created.id, olds, creating()).changes is False
    provider_only = {**creating(), "__provider": "another serialized provider"}
    assert provider.diff(created.id, {**olds, "__provider": "x"}, provider_only).changes is False
    renamed = provider.diff(created.id, olds, creating(name="liftoff-staging-2"))
    assert (renamed.changes, renamed.replaces) == (True, [])
    moved = provider.diff(created.id, olds, creating(region="eu-central-1"))
    assert (moved.changes, moved.replaces) == (True, ["region"])
    other_org = provider.diff(created.id, olds, creating(organization_slug="other-org"))
    assert other_org.replaces == ["organization_slug"]
    rotated = provider.diff(created.id, olds, creating(db_pass="a-new-password-value"))
    assert (rotated.changes, rotated.replaces) == (True, [])
    unprotected = provider.diff(created.id, olds, creating(deletion_protection=False))
    assert (unprotected.changes, unprotected.replaces) == (True, [])
    assert set(REPLACE_ON) == {"organization_slug", "region", "project_ref"}


def test_update_renames_and_rotates_the_password_in_place(api, provider):
    created = provider.create(creating())
    news = creating(name="liftoff-staging-2", db_pass="a-new-password-value")
    outs = provider.update(created.id, created.outs or {}, news).outs or {}
    project = api.projects[created.id]
    assert (project.name, project.db_pass) == ("liftoff-staging-2", "a-new-password-value")
    assert [c.body for c in api.calls("PATCH")] == [
        {"name": "liftoff-staging-2"},
        {"password": "a-new-password-value"},
    ]
    assert outs["name"] == "liftoff-staging-2"
    assert outs["db_pass_sha256"] == password_digest("a-new-password-value")
    assert len(api.calls("POST")) == 1  # same project, never a new one


def test_delete_is_refused_while_protected(api, provider):
    created = provider.create(creating())
    with pytest.raises(SupabaseApiError, match="deletion_protection on: set protect=False"):
        provider.delete(created.id, created.outs or {})
    assert api.calls("DELETE") == []
    assert created.id in api.projects


def test_delete_removes_an_unprotected_project(api, provider):
    created = provider.create(creating(deletion_protection=False))
    provider.delete(created.id, created.outs or {})
    assert [c.path for c in api.calls("DELETE")] == [f"/v1/projects/{created.id}"]
    assert created.id not in api.projects
    provider.delete(created.id, created.outs or {})  # already gone: nothing left to do


def test_adopting_reads_an_existing_project_and_never_deletes_it(api, provider):
    existing = api.add(name="made-by-hand")
    props = {"name": "made-by-hand", "region": "eu-west-1", "project_ref": existing.ref}
    assert SupabaseProjectProvider().check({}, props).failures == []
    result = provider.create({**props, "deletion_protection": False})
    assert result.id == existing.ref
    assert api.calls("POST") == []
    assert (result.outs or {})["pooler_host"] == "aws-1-eu-west-1.pooler.supabase.com"
    provider.delete(existing.ref, result.outs or {})
    assert api.calls("DELETE") == [] and existing.ref in api.projects


def test_an_adopted_project_is_never_renamed(api, provider):
    existing = api.add(name="made-by-hand")
    props = {
        "name": "liftoff-prod",
        "region": "eu-west-1",
        "project_ref": existing.ref,
        "deletion_protection": True,
    }
    created = provider.create(props)
    olds = created.outs or {}
    assert olds["name"] == "made-by-hand"
    assert provider.diff(existing.ref, olds, props).changes is False
    unprotect = {**props, "deletion_protection": False}
    assert provider.diff(existing.ref, olds, unprotect).changes is True
    outs = provider.update(existing.ref, olds, unprotect).outs or {}
    assert outs["deletion_protection"] is False
    assert api.calls("PATCH") == [] and existing.name == "made-by-hand"


def test_adopting_a_missing_project_says_so(api, provider):
    with pytest.raises(SupabaseApiError, match="abcdefghijklmnopqrst does not exist"):
        provider.create({"name": "x", "region": "eu-west-1", "project_ref": "abcdefghijklmnopqrst"})


def test_a_missing_token_names_the_config_key(api, pooler):
    provider = make_provider(api, pooler, token=None)
    with pytest.raises(SupabaseApiError, match="pulumi config set --secret supabase:accessToken"):
        provider.create(creating())
    assert api.seen == []


def test_a_refused_token_is_reported_without_echoing_it(api, pooler):
    provider = make_provider(api, pooler, token="sbp_wrong-token-value")
    with pytest.raises(SupabaseApiError, match="401") as failure:
        provider.create(creating())
    assert "sbp_wrong-token-value" not in str(failure.value)


@pytest.mark.parametrize(
    ("props", "prop", "reason"),
    [
        ({"region": "mars-1"}, "region", "'mars-1' is not one of"),
        ({"name": ""}, "name", "1 to 256 characters"),
        ({"project_ref": "abcdefghijklmnopqrst"}, "organization_slug", "exactly one of"),
        ({"db_pass": None}, "db_pass", "needs its database password"),
    ],
)
def test_check_names_each_bad_input(props, prop, reason):
    news = {"name": "n", "region": "eu-west-1", "organization_slug": "o", "db_pass": "p", **props}
    failures = SupabaseProjectProvider().check({}, news).failures
    assert [(f.property, reason in f.reason) for f in failures] == [(prop, True)]


def test_the_serialized_provider_carries_no_token(api, provider):
    # What the engine stores in the state and unpickles in its provider process.
    provider.login = pooler_login  # as the program makes it, not this test's resolver
    encoded = serialize_provider(provider)
    restored = dill.loads(base64.b64decode(encoded))  # noqa: S301 (bytes made just above)
    assert isinstance(restored, SupabaseProjectProvider)
    assert restored.login is pooler_login
    assert restored.token is None
    assert restored.api_url == api.url
    assert TOKEN.encode() not in base64.b64decode(encoded)


def test_retry_after_is_read_in_both_of_its_forms(api, provider):
    project = api.add()
    later = email.utils.format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    api.fail("GET", f"/v1/projects/{project.ref}", 429, Retry_After=later)
    api.fail("GET", f"/v1/projects/{project.ref}/config/database/pooler", 429, Retry_After="600")
    provider.read(project.ref, {})
    date_wait, capped = waits(provider)
    assert 25 <= date_wait <= 30
    assert capped == provider.max_backoff_seconds  # a wait is never longer than the provider allows


def test_an_unknown_password_at_preview_has_an_unknown_digest(provider):
    """At preview a generated password is the engine's unknown sentinel: nothing to hash."""
    from pulumi.runtime import rpc

    checked = provider.check(
        {}, {"name": "n", "region": "eu-west-1", "organization_slug": "o", "db_pass": rpc.UNKNOWN}
    )
    assert checked.inputs["db_pass_sha256"] == rpc.UNKNOWN
    known = provider.check(
        {}, {"name": "n", "region": "eu-west-1", "organization_slug": "o", "db_pass": "pw"}
    )
    assert known.inputs["db_pass_sha256"] not in (None, rpc.UNKNOWN)


# The pooler of a new project ----------------------------------------------------------------


def test_create_ends_with_a_login_through_the_pooler_the_migrations_use(api, provider, pooler):
    ref = provider.create(creating()).id
    (asked,) = provider.login.asked
    assert (asked.host, asked.port) == ("aws-1-eu-west-1.pooler.supabase.com", 5432)
    assert (asked.user, asked.database, asked.password) == (f"postgres.{ref}", "postgres", PASSWORD)
    assert PASSWORD not in repr(asked)
    assert pooler.logins == [(f"postgres.{ref}", "ok")]


def test_a_new_project_the_pooler_does_not_know_yet_is_waited_for(api, provider, pooler):
    """Supavisor's "Tenant or user not found" while a new project is registered with it."""
    pooler.unknown_for = 4
    ref = provider.create(creating()).id
    assert [outcome for _, outcome in pooler.logins] == ["unknown"] * 4 + ["ok"]
    assert waits(provider) == [5.0] * 3 + [5.0] * 4  # three health polls, then four pooler polls
    assert all(user == f"postgres.{ref}" for user, _ in pooler.logins)


def test_a_pooler_that_never_lets_in_fails_naming_the_project_the_host_and_the_wait(api, pooler):
    pooler.unknown_for = 10**6
    provider = make_provider(api, pooler, poll_seconds=0.05, pooler_timeout_seconds=0.5)
    provider.sleep = time.sleep
    with pytest.raises(SupabaseApiError) as failed:
        provider.create(creating())
    (ref,) = api.projects
    message = str(failed.value)
    assert f"Supabase project {ref}: its pooler aws-1-eu-west-1.pooler.supabase.com:5432" in message
    # The wait is real time: its figure is what this machine took (0 s, or more under load).
    assert re.search(rf"still refuses postgres\.{ref} after \d+s \(", message), message
    assert "Tenant or user not found" in message
    assert f"projectRef {ref}" in message, "a failed create records nothing: it says how to go on"
    assert PASSWORD not in message


def test_a_new_password_is_waited_for_until_the_pooler_has_it(api, provider, pooler):
    created = provider.create(creating())
    pooler.stale_password_for = 2
    news = creating(db_pass="a-new-password-value")
    provider.update(created.id, created.outs or {}, news)
    assert [outcome for _, outcome in pooler.logins] == ["ok", "bad password", "bad password", "ok"]


def test_a_rename_logs_in_to_nothing(api, provider, pooler):
    created = provider.create(creating())
    provider.update(created.id, created.outs or {}, creating(name="liftoff-staging-2"))
    assert len(pooler.logins) == 1


def test_an_adopted_project_is_not_logged_in_to(api, provider, pooler):
    project = api.add()
    provider.create(creating(organization_slug=None, project_ref=project.ref, db_pass=None))
    assert pooler.logins == []


def test_the_pooler_double_checks_what_a_real_client_sends(api, provider, pooler):
    """asyncpg over TLS against the double: a wrong password is refused as Postgres refuses it."""
    ref = provider.create(creating()).id
    target = PoolerLogin("127.0.0.1", pooler.port, f"postgres.{ref}", "postgres", "wrong-password")
    with pytest.raises(asyncpg.InvalidPasswordError, match="password authentication failed"):
        pooler_login(target, timeout=5.0)
