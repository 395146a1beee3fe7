"""${message}

Revision ID: ${up_revision}
Revises: ${down_revision | comma,n}
Create Date: ${create_date}
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
${imports if imports else ""}

revision: str = ${repr(up_revision)}
down_revision: str | None = ${repr(down_revision)}
branch_labels: str | Sequence[str] | None = ${repr(branch_labels)}
depends_on: str | Sequence[str] | None = ${repr(depends_on)}
# "expand" runs before traffic moves and must keep every rollback target working; "contract"
# (a drop, a rename's second half, a tightened constraint) is held until no rollback target
# needs the old schema. See docs/schema-changes.md.
phase = "expand"


def upgrade() -> None:
    # A new table, sequence or function: revoke it from anon and authenticated (a function:
    # from PUBLIC too) and grant back only what docs/api.md lists; see migration 0005.
    ${upgrades if upgrades else "pass"}


def downgrade() -> None:
    ${downgrades if downgrades else "pass"}
