"""The dev-token tool mints only inside the local system."""

from __future__ import annotations

from pathlib import Path

import jwt
import pytest

from app.local.config import TENANTS, LocalConfig
from app.local.token import main, mint_dev_token

pytestmark = pytest.mark.unit


@pytest.fixture
def local(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> LocalConfig:
    monkeypatch.setenv("LIFTOFF_LOCAL_DIR", str(tmp_path / ".local"))
    for name in ("APP_ENV", "K_SERVICE", "CLOUD_RUN_JOB", "CLOUD_RUN_WORKER_POOL", "SUPABASE_JWT_SECRET"):
        monkeypatch.delenv(name, raising=False)
    return LocalConfig.from_env()


def test_mints_a_supabase_shaped_token(local: LocalConfig, capsys):
    secret = local.ensure_jwt_secret()
    assert main(["--tenant", "other"]) == 0
    token = capsys.readouterr().out.strip()
    claims = jwt.decode(token, secret, algorithms=["HS256"], audience="authenticated")
    _, org_id, user_id = TENANTS["other"]
    assert claims["sub"] == str(user_id)
    assert claims["app_metadata"] == {"organization_id": str(org_id)}
    assert claims["role"] == "authenticated"


def test_secret_file_is_private(local: LocalConfig):
    local.ensure_jwt_secret()
    assert local.secret_file.stat().st_mode & 0o777 == 0o600
    assert local.root.stat().st_mode & 0o777 == 0o700
    assert local.ensure_jwt_secret() == local.jwt_secret()


def test_refuses_without_a_local_system(local: LocalConfig, capsys):
    assert main([]) == 2
    assert "run `make dev` first" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("name", "value", "reason"),
    [
        ("APP_ENV", "prod", "APP_ENV is 'prod'"),
        ("K_SERVICE", "liftoff-api", "K_SERVICE is set"),
        ("CLOUD_RUN_JOB", "liftoff-migrate", "CLOUD_RUN_JOB is set"),
        ("SUPABASE_JWT_SECRET", "the-real-project-secret", "not the local system's secret"),
    ],
)
def test_refuses_outside_the_local_system(local: LocalConfig, monkeypatch, capsys, name, value, reason):
    local.ensure_jwt_secret()
    monkeypatch.setenv(name, value)
    assert main([]) == 2
    err = capsys.readouterr().err
    assert err.startswith("refusing to mint a dev token:")
    assert reason in err


def test_custom_claim_path():
    _, org_id, user_id = TENANTS["demo"]
    token = mint_dev_token("s" * 32, user_id=user_id, org_id=org_id, tenant_claim="app_metadata.tenant.id")
    claims = jwt.decode(token, "s" * 32, algorithms=["HS256"], audience="authenticated")
    assert claims["app_metadata"] == {"tenant": {"id": str(org_id)}}


def test_bad_port_is_a_clear_error(monkeypatch):
    from app.local.config import LocalConfigError

    monkeypatch.setenv("LIFTOFF_API_PORT", "eighty")
    with pytest.raises(LocalConfigError, match="LIFTOFF_API_PORT='eighty' is not a port number"):
        LocalConfig.from_env()
