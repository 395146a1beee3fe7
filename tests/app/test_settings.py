"""The settings contract: one list of every variable, with what the infrastructure must know."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from app.settings import ENV_VARS, PoolMode, Role, Settings, SettingsError, env_vars_for

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's shell may have sourced .local/dev.env; these tests start from nothing."""
    for var in ENV_VARS:
        monkeypatch.delenv(var.name, raising=False)


def by_name() -> dict[str, object]:
    return {var.name: var for var in ENV_VARS}


def test_contract_lists_every_setting_once():
    names = [var.name for var in ENV_VARS]
    assert len(names) == len(set(names))
    assert set(names) == {name.upper() for name in Settings.model_fields}


@pytest.mark.parametrize(
    ("name", "secret", "required", "used_by"),
    [
        ("DATABASE_URL", True, True, {Role.API, Role.WORKER, Role.SCALER}),
        ("MIGRATIONS_DATABASE_URL", True, True, {Role.MIGRATE}),
        ("REDIS_URL", True, True, {Role.API, Role.WORKER}),
        ("SUPABASE_JWT_SECRET", True, False, {Role.API}),
        ("SENTRY_DSN", True, False, {Role.API, Role.WORKER}),
        ("SUPABASE_JWKS_URL", False, False, {Role.API}),
        ("PORT", False, False, {Role.API, Role.WORKER, Role.SCALER}),
        ("SCALER_POOL", False, True, {Role.SCALER}),
        ("WORKER_WAKE_URL", False, False, {Role.API}),
    ],
)
def test_contract_entries(name, secret, required, used_by):
    var = by_name()[name]
    assert (var.secret, var.required, var.used_by) == (secret, required, used_by)  # type: ignore[attr-defined]
    assert var.description  # type: ignore[attr-defined]


def test_the_scaler_reads_the_database_and_its_bounds_only():
    """No Redis, no provider key, no token secret: it counts the queue and sets the pool's count."""
    secrets = {var.name for var in env_vars_for(Role.SCALER) if var.secret}
    assert secrets == {"DATABASE_URL"}


def test_migrate_does_not_read_the_pooled_url():
    names = {var.name for var in env_vars_for(Role.MIGRATE)}
    assert "MIGRATIONS_DATABASE_URL" in names
    assert "DATABASE_URL" not in names


def test_reads_the_environment(monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "postgresql://u:p@db:6543/postgres")
    monkeypatch.setenv("LOG_LEVEL", "debug")
    monkeypatch.setenv("PORT", "9000")
    settings = Settings()
    assert settings.secret("database_url") == "postgresql://u:p@db:6543/postgres"
    assert settings.log_level == "DEBUG"
    assert settings.port == 9000
    assert "u:p" not in repr(settings)


@pytest.mark.parametrize(
    ("role", "missing"),
    [
        (Role.API, "DATABASE_URL, REDIS_URL"),
        (Role.WORKER, "DATABASE_URL, REDIS_URL"),
        (Role.MIGRATE, "MIGRATIONS_DATABASE_URL"),
    ],
)
def test_require_names_what_is_missing(role, missing):
    with pytest.raises(SettingsError, match=f"{role} needs these environment variables: {missing}"):
        Settings().require(role)


def test_api_needs_a_way_to_verify_tokens():
    settings = Settings(database_url="postgresql://h/db", redis_url="redis://h")
    with pytest.raises(SettingsError, match="SUPABASE_JWT_SECRET or SUPABASE_JWKS_URL"):
        settings.require(Role.API)
    settings.model_copy(update={"supabase_jwks_url": "https://x.supabase.co/jwks"}).require(Role.API)


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://u:p@aws-0-eu-west-1.pooler.supabase.com:6543/postgres",
        "postgresql://u:p@db.ref.supabase.co:5432/postgres",
        "postgresql://u:p@localhost/postgres",
    ],
)
def test_auto_pool_mode_is_a_small_pool_behind_the_transaction_pooler_too(url):
    # A transaction-mode pooler pins no server connection to an idle client connection, so a
    # new connection per request would only pay TCP, TLS and authentication each time.
    assert Settings(database_url=url).pool_mode() is PoolMode.QUEUE


@pytest.mark.parametrize(
    ("url", "explicit", "expected"),
    [
        ("postgresql://u:p@pooler:6543/postgres", None, True),
        ("postgresql://u:p@pooler:5432/postgres", None, False),
        ("postgresql://u:p@pgbouncer:6432/postgres", True, True),
        ("postgresql://u:p@pooler:6543/postgres", False, False),
    ],
)
def test_transaction_pooler_is_detected_or_declared(url, explicit, expected):
    settings = Settings(database_url=url, db_transaction_pooler=explicit)
    assert settings.transaction_pooler() is expected


def test_explicit_pool_mode_wins():
    url = "postgresql://u:p@pooler:6543/postgres"
    assert Settings(database_url=url, db_pool_mode=PoolMode.NULL).pool_mode() is PoolMode.NULL


def test_tenant_limits_and_http_bounds_are_in_the_contract_with_sane_defaults():
    contract = {var.name: var for var in ENV_VARS}
    for name in ("TENANT_MAX_ACTIVE_JOBS", "TENANT_MAX_SUBMISSIONS_PER_MINUTE"):
        assert contract[name].used_by == frozenset({Role.MIGRATE})
        assert not contract[name].secret and not contract[name].required
    for name in (
        "DB_REQUEST_TIMEOUT_SECONDS",
        "HTTP_MAX_HEADER_BYTES",
        "HTTP_REQUEST_TIMEOUT_SECONDS",
        "HTTP_KEEP_ALIVE_SECONDS",
    ):
        assert contract[name].used_by == frozenset({Role.API})
    defaults = Settings()
    # A small team's defaults: one tenant sending 2,000 jobs in 20 seconds meets 429s.
    assert defaults.tenant_max_active_jobs is not None and defaults.tenant_max_active_jobs < 2_000
    assert defaults.tenant_max_submissions_per_minute is not None
    assert defaults.tenant_max_submissions_per_minute < 2_000 * 3
    # A frozen database answers 503 within a few seconds.
    assert defaults.db_request_timeout_seconds <= 5
    assert defaults.db_connect_timeout_seconds <= defaults.db_request_timeout_seconds


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("tenant_max_active_jobs", 0),
        ("tenant_max_submissions_per_minute", -1),
        ("db_request_timeout_seconds", 0),
        ("http_max_header_bytes", 100),
    ],
)
def test_out_of_range_limits_are_refused(field, value):
    with pytest.raises(ValidationError, match=field):
        Settings(**{field: value})


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("supabase_jwks_url", "http://example.com/jwks", "https"),
        ("port", 0, "port"),
        ("tenant_claim", "app metadata", "tenant_claim"),
        ("app_env", "production", "app_env"),
        ("jwks_cache_seconds", 1, "jwks_cache_seconds"),
    ],
)
def test_bad_values_name_the_setting(field, value, fragment):
    with pytest.raises(ValidationError, match=fragment):
        Settings(**{field: value})


def test_secure_defaults():
    settings = Settings()
    assert settings.app_env == "prod"
    assert settings.host == "127.0.0.1"
    assert settings.jwt_audience == "authenticated"


def test_the_docs_document_every_variable(repo_root):
    pages = [repo_root / "README.md", *sorted((repo_root / "docs").glob("*.md"))]
    docs = "\n".join(page.read_text() for page in pages)
    undocumented = [var.name for var in ENV_VARS if f"`{var.name}`" not in docs]
    assert not undocumented, f"neither README.md nor docs/ mentions: {undocumented}"
