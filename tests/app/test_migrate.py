"""Phases of the migrations: what a release holds, and how far an upgrade goes without it."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest

from app.migrate import (
    Migration,
    MigrationPhaseError,
    Phase,
    current_revision,
    expand_target,
    migrations,
    pending,
    pending_contract,
    script_directory,
    upgrade,
)
from tests.conftest import Servers

MIGRATIONS = Path(__file__).resolve().parents[2] / "app" / "migrations"


def _line(*phases: str) -> list[Migration]:
    found, down = [], None
    for number, phase in enumerate(phases, start=1):
        revision = f"{number:04d}"
        found.append(Migration(revision, down, Phase(phase), Path(f"{revision}_x.py")))
        down = revision
    return found


def _planted(tmp_path: Path, *modules: tuple[str, str]) -> Path:
    """A copy of the app's migrations with `modules` (file name, phase line) added on top."""
    location = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS, location, ignore=shutil.ignore_patterns("__pycache__"))
    down = migrations()[-1].revision
    for number, (name, phase_line) in enumerate(modules, start=90):
        revision = f"{number:04d}"
        (location / "versions" / f"{revision}_{name}.py").write_text(
            f'"""{name}."""\n\nfrom alembic import op\n\nrevision = "{revision}"\ndown_revision = "{down}"\n'
            f"branch_labels = None\ndepends_on = None\n{phase_line}\n\n\n"
            f"def upgrade() -> None:\n    op.execute(\"COMMENT ON TABLE generations IS '{name}'\")\n\n\n"
            "def downgrade() -> None:\n    pass\n"
        )
        down = revision
    return location


@pytest.mark.unit
def test_every_revision_of_the_app_declares_its_phase():
    found = migrations()
    assert [m.revision for m in found][:5] == ["0001", "0002", "0003", "0004", "0005"]
    for migration in found:
        assert migration.phase is Phase.EXPAND, migration.name
        assert "\nphase = " in migration.path.read_text(), f"{migration.name} declares no phase"


@pytest.mark.unit
def test_pending_contract_migrations_are_those_after_the_current_revision():
    line = _line("expand", "contract", "expand", "contract")
    assert [m.revision for m in pending_contract(line, None)] == ["0002", "0004"]
    assert [m.revision for m in pending_contract(line, "0002")] == ["0004"]
    assert pending_contract(line, "0004") == []
    with pytest.raises(MigrationPhaseError, match="newer release"):
        pending(line, "0099")


@pytest.mark.unit
def test_the_expand_target_stops_before_the_first_held_contract_migration():
    line = _line("expand", "contract", "expand", "contract")
    assert expand_target(line, None) == "0001"
    assert expand_target(line, "0001") == "0001"
    assert expand_target(line, "0001", allowed_contract={"0002"}) == "0003"
    assert expand_target(line, "0002") == "0003"
    assert expand_target(line, "0003", allowed_contract={"0004"}) == "0004"
    assert expand_target(_line("contract"), None) is None


@pytest.mark.unit
def test_a_missing_phase_is_expand_and_a_misspelt_one_is_refused(tmp_path):
    location = _planted(tmp_path, ("silent", ""), ("held", 'phase = "contract"'))
    found = migrations(script_directory(location))
    assert [(m.revision, m.phase) for m in found[-2:]] == [("0090", Phase.EXPAND), ("0091", Phase.CONTRACT)]
    misspelt = _planted(tmp_path / "other", ("typo", 'phase = "contracts"'))
    with pytest.raises(MigrationPhaseError, match="0090_typo.py declares phase = 'contracts'"):
        migrations(script_directory(misspelt))


async def _fresh(servers: Servers, name: str) -> str:
    conn = await asyncpg.connect(servers.dsn)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await conn.execute(f"CREATE DATABASE {name}")
    finally:
        await conn.close()
    return servers.postgres.dsn(name)


@pytest.mark.integration
async def test_an_upgrade_that_holds_contract_migrations_stops_before_them(servers: Servers, tmp_path):
    location = _planted(
        tmp_path, ("first", 'phase = "expand"'), ("held", 'phase = "contract"'), ("after", "")
    )
    dsn = await _fresh(servers, "migrate_hold")
    held = await asyncio.to_thread(upgrade, dsn, hold_contract=True, script_location=location)
    assert [m.revision for m in held] == ["0091"]
    assert await asyncio.to_thread(current_revision, dsn) == "0090"
    held = await asyncio.to_thread(
        upgrade, dsn, hold_contract=True, allowed_contract={"0091"}, script_location=location
    )
    assert held == []
    assert await asyncio.to_thread(current_revision, dsn) == "0092"


@pytest.mark.integration
async def test_python_m_app_migrate_holds_contract_migrations_unless_asked(servers: Servers, tmp_path):
    dsn = await _fresh(servers, "migrate_cli")
    env = {**os.environ, "MIGRATIONS_DATABASE_URL": dsn, "LOG_FORMAT": "console"}
    run = [sys.executable, "-m", "app", "migrate"]
    result = subprocess.run(
        [*run, "--contract", "hold"], env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert await asyncio.to_thread(current_revision, dsn) == migrations()[-1].revision
    result = subprocess.run(
        [*run, "--contract", "nope"], env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode == 2
