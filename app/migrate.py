"""Run Alembic migrations programmatically (what `python -m app migrate` does), and the phases
of the revisions: expand or contract (docs/schema-changes.md).

Each revision module declares `phase = "expand"` or `phase = "contract"`; one that declares
nothing is an expand migration. Expand migrations run before traffic moves and keep every
revision a rollback could return to working. Contract migrations (a drop, a rename's second
half, a tightened constraint) are held: `upgrade(..., hold_contract=True)` stops before the
first one it is not allowed to run, and `pending_contract` lists what is held.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.exc import ProgrammingError

from app.core.db import create_engine
from app.settings import PoolMode, Role, Settings

ALEMBIC_INI = Path(__file__).with_name("alembic.ini")


def alembic_config(dsn: str | None = None, script_location: Path | None = None) -> Config:
    """Alembic's config for this app; without `dsn`, env.py reads MIGRATIONS_DATABASE_URL.
    `script_location` reads another copy of the migrations (a `migrations` folder)."""
    config = Config(str(ALEMBIC_INI))
    if dsn is not None:
        config.attributes["dsn"] = dsn
    if script_location is not None:
        config.set_main_option("script_location", str(script_location))
    return config


class Phase(StrEnum):
    """When a migration may run in a release."""

    # Before traffic moves: the old code keeps working on the new schema.
    EXPAND = "expand"
    # Only once no revision a rollback could return to needs the old schema.
    CONTRACT = "contract"


class MigrationPhaseError(ValueError):
    """A revision declares a phase that is neither expand nor contract, or the history branches."""


@dataclass(frozen=True)
class Migration:
    """One Alembic revision, as its module declares it."""

    revision: str
    down_revision: str | None
    phase: Phase
    path: Path

    @property
    def name(self) -> str:
        """`0004_tenant_writes.py`: how a report names the migration."""
        return self.path.name


def script_directory(script_location: Path | None = None) -> ScriptDirectory:
    """The app's revisions; `script_location` reads another checkout's (a `migrations` folder)."""
    return ScriptDirectory.from_config(alembic_config(script_location=script_location))


def migrations(script: ScriptDirectory | None = None) -> list[Migration]:
    """Every revision from the first to head, in the order they run."""
    script = script or script_directory()
    heads = script.get_heads()
    if len(heads) > 1:
        raise MigrationPhaseError(
            f"the migration history has {len(heads)} heads ({', '.join(heads)}): merge them"
        )
    found: list[Migration] = []
    for rev in script.walk_revisions("base", "heads"):
        declared = getattr(rev.module, "phase", Phase.EXPAND.value)
        try:
            phase = Phase(declared)
        except ValueError:
            raise MigrationPhaseError(
                f"{Path(rev.path).name} declares phase = {declared!r}: it must be 'expand' or 'contract'"
            ) from None
        down = rev.down_revision
        if isinstance(down, tuple | list):
            raise MigrationPhaseError(f"{Path(rev.path).name} merges branches: phases assume one line")
        found.append(Migration(rev.revision, down, phase, Path(rev.path)))
    found.reverse()
    return found


def pending(all_migrations: list[Migration], current: str | None) -> list[Migration]:
    """The migrations after `current` (None: an empty database), in the order they run."""
    if current is None:
        return list(all_migrations)
    ids = [m.revision for m in all_migrations]
    if current not in ids:
        raise MigrationPhaseError(
            f"the database is at revision {current}, which this code does not have: it was migrated"
            " by a newer release"
        )
    return all_migrations[ids.index(current) + 1 :]


def pending_contract(all_migrations: list[Migration], current: str | None) -> list[Migration]:
    """The contract migrations not yet applied to a database at `current`: what a release holds."""
    return [m for m in pending(all_migrations, current) if m.phase is Phase.CONTRACT]


def expand_target(
    all_migrations: list[Migration], current: str | None, allowed_contract: Collection[str] = ()
) -> str | None:
    """The highest revision reachable from `current` without running a contract migration that
    `allowed_contract` does not name: everything after the first held one waits with it, since
    revisions run in order. None when that is `current` itself (nothing to run) and it is None."""
    target = current
    for migration in pending(all_migrations, current):
        if migration.phase is Phase.CONTRACT and migration.revision not in allowed_contract:
            break
        target = migration.revision
    return target


UNDEFINED_TABLE = "42P01"


def current_revision(dsn: str) -> str | None:
    """The revision the database is at; None for an empty one."""

    async def read() -> str | None:
        engine = create_engine(dsn, pool_mode=PoolMode.NULL, application_name="liftoff-migrate")
        try:
            async with engine.connect() as conn:
                try:
                    value = await conn.scalar(text("SELECT version_num FROM alembic_version"))
                except ProgrammingError as exc:
                    # No alembic_version: never migrated. Anything else (permission denied) is
                    # not an answer, and must not read as "nothing has run".
                    if getattr(exc.orig, "sqlstate", None) == UNDEFINED_TABLE:
                        return None
                    raise
                return None if value is None else str(value)
        finally:
            await engine.dispose()

    return asyncio.run(read())


def upgrade(
    dsn: str | None = None,
    revision: str = "head",
    *,
    hold_contract: bool = False,
    allowed_contract: Collection[str] = (),
    script_location: Path | None = None,
) -> list[Migration]:
    """Migrate the database up to `revision`; the contract migrations held back, if any.

    With `hold_contract`, the run stops before the first contract migration `allowed_contract`
    does not name (`revision` must then be "head"), and returns the contract migrations it
    left pending. Without it, everything up to `revision` runs, as Alembic would.
    """
    if not hold_contract:
        command.upgrade(alembic_config(dsn, script_location), revision)
        return []
    if revision != "head":
        raise ValueError("hold_contract stops short of head by itself: give no revision")
    if dsn is None:
        dsn = Settings().require(Role.MIGRATE).secret("migrations_database_url")
    found = migrations(script_directory(script_location))
    current = current_revision(dsn)
    target = expand_target(found, current, allowed_contract)
    if target is not None and target != current:
        command.upgrade(alembic_config(dsn, script_location), target)
    return pending_contract(found, target)


def downgrade(dsn: str | None = None, revision: str = "base") -> None:
    """Migrate the database down to `revision`."""
    command.downgrade(alembic_config(dsn), revision)


def apply_tenant_limits(dsn: str, settings: Settings) -> None:
    """Write the TENANT_* settings into the defaults row of liftoff.tenant_limits, which the
    database enforces on every tenant's submissions (migration 0004). Rows of single
    organizations, set by an operator, keep precedence."""

    async def write() -> None:
        engine = create_engine(dsn, pool_mode=PoolMode.NULL, application_name="liftoff-migrate")
        try:
            async with engine.begin() as conn:
                await conn.execute(
                    text(
                        "INSERT INTO liftoff.tenant_limits"
                        " (organization_id, max_active_jobs, max_submissions_per_minute)"
                        " VALUES (liftoff.default_limits_id(), :active, :per_minute)"
                        " ON CONFLICT (organization_id) DO UPDATE SET"
                        " max_active_jobs = EXCLUDED.max_active_jobs,"
                        " max_submissions_per_minute = EXCLUDED.max_submissions_per_minute,"
                        " updated_at = now()"
                    ),
                    {
                        "active": settings.tenant_max_active_jobs,
                        "per_minute": settings.tenant_max_submissions_per_minute,
                    },
                )
        finally:
            await engine.dispose()

    asyncio.run(write())
