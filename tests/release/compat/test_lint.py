"""Squawk in `make lint`: a rollback-incompatible change fails an expand migration only."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from app.migrate import migrations
from release.compat.lint import lint, main

pytestmark = pytest.mark.unit

MIGRATIONS = Path(__file__).resolve().parents[3] / "app" / "migrations"


def planted(tmp_path: Path, upgrade: str, header: str = "") -> Path:
    """A copy of the app's migrations with one more revision, 0099, on top."""
    location = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS, location, ignore=shutil.ignore_patterns("__pycache__"))
    (location / "versions" / "0099_planted.py").write_text(
        f'"""Planted."""\n\nfrom alembic import op\n\nrevision = "0099"\n'
        f'down_revision = "{migrations()[-1].revision}"\nbranch_labels = None\ndepends_on = None\n'
        f"{header}\n\n\ndef upgrade() -> None:\n    {upgrade}\n\n\ndef downgrade() -> None:\n    pass\n"
    )
    return location


def test_the_apps_migrations_pass():
    assert [str(v) for v in lint() if v.level == "error"] == []


def test_a_dropped_column_fails_an_expand_migration(tmp_path, capsys):
    location = planted(tmp_path, 'op.drop_column("generations", "params")')
    (violation,) = [v for v in lint(location) if v.migration.revision == "0099"]
    assert (violation.rule, violation.level) == ("ban-drop-column", "error")
    assert main(["--migrations", str(location)]) == 1
    assert "0099_planted.py (expand): error: ban-drop-column" in capsys.readouterr().out


def test_the_same_change_passes_as_a_contract_migration(tmp_path):
    location = planted(tmp_path, 'op.drop_column("generations", "params")', 'phase = "contract"')
    (violation,) = [v for v in lint(location) if v.migration.revision == "0099"]
    assert violation.level == "note" and "held" in violation.why
    assert main(["--migrations", str(location)]) == 0


def test_a_compliant_expand_migration_passes_and_its_locking_hazard_is_a_warning(tmp_path):
    location = planted(tmp_path, 'op.create_index("generations_model_idx", "generations", ["model"])')
    found = [(v.rule, v.level) for v in lint(location) if v.migration.revision == "0099"]
    assert found == [("require-concurrent-index-creation", "warning")]
    assert main(["--migrations", str(location)]) == 0


def test_an_index_built_concurrently_outside_the_transaction_is_clean(tmp_path):
    location = planted(
        tmp_path,
        "with op.get_context().autocommit_block():\n"
        '        op.execute("CREATE INDEX CONCURRENTLY IF NOT EXISTS generations_model_idx'
        ' ON generations (model)")',
    )
    assert [v for v in lint(location) if v.migration.revision == "0099"] == []


def test_a_revision_may_exempt_itself_from_a_rule_with_a_reason(tmp_path):
    header = 'squawk_ignore = {"renaming-column": "nothing has read this column since 0042"}'
    location = planted(tmp_path, 'op.alter_column("generations", "error", new_column_name="failure")', header)
    (violation,) = [v for v in lint(location) if v.migration.revision == "0099"]
    assert violation.level == "note" and "since 0042" in violation.why
