"""Run Alembic migrations programmatically (what `python -m app migrate` does)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

ALEMBIC_INI = Path(__file__).with_name("alembic.ini")


def alembic_config(dsn: str | None = None) -> Config:
    """Alembic's config for this app; without `dsn`, env.py reads MIGRATIONS_DATABASE_URL."""
    config = Config(str(ALEMBIC_INI))
    if dsn is not None:
        config.attributes["dsn"] = dsn
    return config


def upgrade(dsn: str | None = None, revision: str = "head") -> None:
    """Migrate the database up to `revision`."""
    command.upgrade(alembic_config(dsn), revision)


def downgrade(dsn: str | None = None, revision: str = "base") -> None:
    """Migrate the database down to `revision`."""
    command.downgrade(alembic_config(dsn), revision)
