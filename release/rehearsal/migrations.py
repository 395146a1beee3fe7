"""A rehearsed release that carries a schema change: the candidate's own tree, with one migration.

The candidate runs a copy of this checkout's `app/` with one more Alembic revision on top:
`expand` adds a nullable column (every rollback target keeps working, the release goes on),
`breaking` renames a column the stable code reads and writes (the schema gate refuses the
release before anything migrates or any traffic moves).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from app.migrate import migrations
from release.rehearsal.system import ROOT

REVISION = "0900"
PLANTS: dict[str, tuple[str, str]] = {
    "expand": (
        "a nullable column no release reads yet",
        'op.add_column("generations", sa.Column("note", sa.Text))',
    ),
    "breaking": (
        "renames a column the running code reads and writes",
        'op.alter_column("generations", "prompt", new_column_name="input")',
    ),
}
TEMPLATE = '''"""Rehearsal: {what}.

Revision ID: {revision}
Revises: {down}
"""

import sqlalchemy as sa
from alembic import op

revision = "{revision}"
down_revision = "{down}"
branch_labels = None
depends_on = None
phase = "expand"


def upgrade() -> None:
    {statement}


def downgrade() -> None:
    raise NotImplementedError("a rehearsal's migration is never downgraded")
'''


def candidate_tree(kind: str, into: Path, root: Path = ROOT) -> Path:
    """This checkout's `app/` (and pyproject.toml) copied into `into`, with the `kind` migration
    on top of its head."""
    if kind not in PLANTS:
        raise ValueError(f"a rehearsed migration is one of {sorted(PLANTS)}, not {kind!r}")
    what, statement = PLANTS[kind]
    shutil.rmtree(into, ignore_errors=True)
    shutil.copytree(root / "app", into / "app", ignore=shutil.ignore_patterns("__pycache__"))
    # What the image is built of (revision names follow it): the app and its dependency list.
    shutil.copy2(root / "pyproject.toml", into / "pyproject.toml")
    down = migrations()[-1].revision
    plant = TEMPLATE.format(what=what, revision=REVISION, down=down, statement=statement)
    (into / "app" / "migrations" / "versions" / f"{REVISION}_rehearsal_{kind}.py").write_text(plant)
    return into
