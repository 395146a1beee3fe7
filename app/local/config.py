"""Where the local system keeps its data and which loopback ports it uses."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from uuid import UUID, uuid5

from app.local.servers import LOOPBACK, private_dir

# Deterministic ids, so tokens minted before a restart still name the same seeded tenants.
_NAMESPACE = UUID("6f1d6c4e-8a3b-4f0e-9a57-1c2e3d4b5a69")
TENANTS: dict[str, tuple[str, UUID, UUID]] = {
    # name: (organization name, organization id, user id)
    "demo": ("Demo", uuid5(_NAMESPACE, "org:demo"), uuid5(_NAMESPACE, "user:demo")),
    "other": ("Other", uuid5(_NAMESPACE, "org:other"), uuid5(_NAMESPACE, "user:other")),
}


class LocalConfigError(ValueError):
    """An environment variable of the local system has a bad value."""


def _port(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= 65535:
        raise LocalConfigError(f"{name}={raw!r} is not a port number (1-65535)")
    return int(raw)


@dataclass(frozen=True)
class LocalConfig:
    """Paths and ports of one local system; LIFTOFF_* variables override the defaults."""

    root: Path
    api_port: int
    worker_port: int
    pg_port: int
    redis_port: int
    scaler_port: int = 8002

    @classmethod
    def from_env(cls) -> LocalConfig:
        return cls(
            root=Path(os.environ.get("LIFTOFF_LOCAL_DIR", ".local")).resolve(),
            api_port=_port("LIFTOFF_API_PORT", 8000),
            worker_port=_port("LIFTOFF_WORKER_PORT", 8001),
            pg_port=_port("LIFTOFF_PG_PORT", 54320),
            redis_port=_port("LIFTOFF_REDIS_PORT", 63790),
            scaler_port=_port("LIFTOFF_SCALER_PORT", 8002),
        )

    @property
    def pg_dir(self) -> Path:
        return self.root / "postgres"

    @property
    def redis_dir(self) -> Path:
        return self.root / "redis"

    @property
    def secret_file(self) -> Path:
        return self.root / "jwt-secret"

    @property
    def env_file(self) -> Path:
        return self.root / "dev.env"

    @property
    def api_url(self) -> str:
        return f"http://{LOOPBACK}:{self.api_port}"

    @property
    def scaler_url(self) -> str:
        return f"http://{LOOPBACK}:{self.scaler_port}"

    @property
    def database_url(self) -> str:
        return f"postgresql://postgres@{LOOPBACK}:{self.pg_port}/postgres"

    @property
    def redis_url(self) -> str:
        return f"redis://{LOOPBACK}:{self.redis_port}/0"

    def jwt_secret(self) -> str | None:
        """The local signing secret, if this local system has one."""
        if self.secret_file.exists():
            return self.secret_file.read_text().strip()
        return None

    def ensure_jwt_secret(self) -> str:
        """The local signing secret, made once and kept in a 0600 file beside the data."""
        existing = self.jwt_secret()
        if existing is not None:
            return existing
        private_dir(self.root)
        secret = secrets.token_urlsafe(48)
        fd = os.open(self.secret_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secret + "\n")
        return secret

    def app_env(self, secret: str) -> dict[str, str]:
        """The settings the app's processes run with."""
        return {
            "APP_ENV": "local",
            "DATABASE_URL": self.database_url,
            "MIGRATIONS_DATABASE_URL": self.database_url,
            "REDIS_URL": self.redis_url,
            "SUPABASE_JWT_SECRET": secret,
            "HOST": LOOPBACK,
            "PORT": str(self.api_port),
            "LOG_FORMAT": os.environ.get("LOG_FORMAT", "console"),
        }
