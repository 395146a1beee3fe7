"""The gate refuses each kind of change a rollback target cannot survive, and passes each kind of
expand-only change: one migration planted per commit on a clone, BASE the commit before it."""

from __future__ import annotations

import pytest

from release.compat import EXIT_COMPATIBLE, EXIT_INCOMPATIBLE, CompatSession, check
from release.compat.trees import export
from tests.release.compat.conftest import PLANT_REVISION, Clone, git

pytestmark = pytest.mark.integration

SUBMIT = "liftoff.submit_generation(text, text, boolean, uuid, uuid, text, text, jsonb, text, text)"

BREAKING = {
    "drop_column": 'op.drop_column("generations", "params")',
    "rename_column": 'op.alter_column("generations", "prompt", new_column_name="input")',
    "drop_table": 'op.drop_table("generation_logs")',
    "rename_table": 'op.rename_table("generations", "jobs")',
    "not_null_without_default": (
        'op.add_column("generations", sa.Column("priority", sa.Integer, nullable=False))'
    ),
    # Every row converts, but the submit function the old code calls returns `params jsonb`.
    "type_change": 'op.alter_column("generations", "params", type_=sa.JSON, postgresql_using="params::json")',
    # NOT VALID: the rows already there pass; every new job without a key is refused.
    "constraint_old_code_violates": (
        'op.execute("ALTER TABLE generations ADD CONSTRAINT generations_key_required'
        ' CHECK (idempotency_key IS NOT NULL) NOT VALID")'
    ),
    # `succeeded` renamed `done`, the rows with it.
    "status_vocabulary": """
op.execute("ALTER TABLE generations DROP CONSTRAINT generations_ai_status_check")
op.execute("UPDATE generations SET ai_status = 'done' WHERE ai_status = 'succeeded'")
op.execute(
    "ALTER TABLE generations ADD CONSTRAINT generations_ai_status_check"
    " CHECK (ai_status IN ('queued', 'running', 'done', 'failed', 'cancelled'))"
)
""",
    "revoked_privilege": 'op.execute("REVOKE UPDATE (cancel_requested) ON generations FROM authenticated")',
    "dropped_function": f'op.execute("DROP FUNCTION {SUBMIT}")',
}

EXPAND_ONLY = {
    "nullable_column": 'op.add_column("generations", sa.Column("note", sa.Text))',
    "column_with_default": (
        'op.add_column("generations", sa.Column("priority", sa.Integer, nullable=False, server_default="0"))'
    ),
    "new_table": """
op.create_table(
    "generation_tags",
    sa.Column(
        "generation_id", sa.Uuid, sa.ForeignKey("generations.id", ondelete="CASCADE"), primary_key=True
    ),
    sa.Column("tag", sa.Text, primary_key=True),
)
op.execute("ALTER TABLE generation_tags ENABLE ROW LEVEL SECURITY")
op.execute("REVOKE ALL ON generation_tags FROM anon, authenticated")
""",
    "view": """
op.execute(
    "CREATE VIEW liftoff.generation_counts AS"
    " SELECT organization_id, ai_status, count(*) AS jobs FROM generations GROUP BY 1, 2"
)
op.execute("REVOKE ALL ON liftoff.generation_counts FROM PUBLIC, anon, authenticated")
""",
    "function": """
op.execute("CREATE FUNCTION liftoff.active_jobs(org uuid) RETURNS bigint LANGUAGE sql STABLE AS"
           " $$ SELECT count(*) FROM generations WHERE organization_id = org"
           " AND ai_status IN ('queued', 'running') $$")
op.execute("REVOKE ALL ON FUNCTION liftoff.active_jobs(uuid) FROM PUBLIC, anon, authenticated")
""",
    "index_concurrently": """
with op.get_context().autocommit_block():
    op.execute("CREATE INDEX CONCURRENTLY IF NOT EXISTS generations_model_idx ON generations (model)")
""",
    "relaxed_constraint": 'op.alter_column("generations", "model", nullable=True)',
    "comment": "op.execute(\"COMMENT ON COLUMN generations.prompt IS 'What the tenant asked for.'\")",
}


@pytest.mark.parametrize("name", sorted(BREAKING))
def test_the_gate_refuses_a_change_the_old_code_cannot_survive(
    name: str, clone: Clone, session: CompatSession
):
    report = session.check(clone.plant(name, BREAKING[name]), label=name)
    assert report.exit_code == EXIT_INCOMPATIBLE, report.text()
    assert report.findings, report.text()
    finding = report.findings[0]
    assert PLANT_REVISION in finding.migrations, report.text()
    assert finding.error, report.text()
    assert f"{PLANT_REVISION}_{name}.py" in report.text()


@pytest.mark.parametrize("name", sorted(EXPAND_ONLY))
def test_the_gate_passes_an_expand_only_change(name: str, clone: Clone, session: CompatSession):
    report = session.check(clone.plant(name, EXPAND_ONLY[name]), label=name)
    assert report.exit_code == EXIT_COMPATIBLE, report.text()
    assert [m.revision for m in report.migrations] == [PLANT_REVISION]
    assert "base.idempotent-retry" in report.steps and "base.read-head" in report.steps


def test_a_contract_migration_is_held_and_named_as_held(clone: Clone, session: CompatSession):
    report = session.check(clone.plant("contract_drop", BREAKING["drop_column"], phase="contract"))
    assert report.exit_code == EXIT_COMPATIBLE, report.text()
    assert report.migrations == []
    assert [(m.revision, m.phase) for m in report.held] == [(PLANT_REVISION, "contract")]
    assert "contract migrations held" in report.text()


def test_a_contract_migration_the_database_has_run_is_applied_under_every_check(clone: Clone):
    """Once a contract migration has run in the real database, the gate must apply it (to BASE's
    schema and to each check) or every expand migration after it would go unchecked."""
    clone.plant(
        "contract_comment", "op.execute(\"COMMENT ON TABLE generations IS 'jobs'\")", phase="contract"
    )
    base = git(clone.path, "rev-parse", "HEAD")
    later = clone.path / "app" / "migrations" / "versions" / "0100_rename_prompt.py"
    later.write_text(
        '"""Planted: a breaking expand migration after an applied contract one."""\n\n'
        "from alembic import op\n\n"
        f'revision = "0100"\ndown_revision = "{PLANT_REVISION}"\nbranch_labels = None\n'
        'depends_on = None\nphase = "expand"\n\n\n'
        "def upgrade() -> None:\n"
        '    op.alter_column("generations", "prompt", new_column_name="input")\n\n\n'
        "def downgrade() -> None:\n    pass\n"
    )
    git(clone.path, "add", str(later))
    git(clone.path, "commit", "-q", "-m", "Plant a breaking expand migration after a contract one")
    head = export(clone.path, git(clone.path, "rev-parse", "HEAD"), clone.trees / "after_contract")
    blind = check(base, head=head, root=clone.path)
    assert blind.exit_code == EXIT_COMPATIBLE and [m.revision for m in blind.held] == [PLANT_REVISION, "0100"]
    seen = check(base, head=head, root=clone.path, applied_contract=(PLANT_REVISION,))
    assert seen.exit_code == EXIT_INCOMPATIBLE, seen.text()
    assert [m.revision for m in seen.migrations] == ["0100"]
    assert 'column "prompt" does not exist' in seen.text()
