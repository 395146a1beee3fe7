"""The SchemaGate port on this machine: the compatibility gate for a release's rollback targets.

A release asks it two things before it migrates anything: whether the code of each rollback
target (by the commit the ledger recorded) still works on the schema the release's expand
migrations make, with the contract migrations it would let run or without; and which contract
migrations the stack's database has not run yet.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from app.migrate import (
    Migration,
    Phase,
    current_revision,
    migrations,
    pending,
    pending_contract,
    script_directory,
)
from release.compat.gate import check
from release.compat.report import CompatReport
from release.compat.trees import ROOT

MIGRATIONS = Path("app/migrations")


@dataclass
class LocalSchemaGate:
    """The gate run here, on local servers: BASE is a commit of `root`, HEAD the tree shipped
    (`head`; None: `root`'s working tree). `dsn` reads the stack's database's revision (a member
    of liftoff_release_reader, migration 0007); without it no contract migration is known to be
    pending or applied, and none is let run (`python -m app migrate` holds them unless told)."""

    root: Path = ROOT
    head: Path | None = None
    dsn: str | None = None

    def pending_contract(self) -> list[str]:
        if self.dsn is None:
            return []
        return [m.revision for m in pending_contract(self._migrations(), current_revision(self.dsn))]

    def applied_contract(self) -> list[str]:
        """The contract migrations the stack's database has run: every check applies them, as
        the code a rollback returns to meets them there."""
        if self.dsn is None:
            return []
        found = self._migrations()
        waiting = {m.revision for m in pending(found, current_revision(self.dsn))}
        return [m.revision for m in found if m.phase is Phase.CONTRACT and m.revision not in waiting]

    def check(self, commit: str, *, allow_contract: Collection[str] = ()) -> CompatReport:
        label = "the release" if self.head is None else str(self.head)
        return check(
            commit,
            head=self.head,
            root=self.root,
            label=label,
            allow_contract=allow_contract,
            applied_contract=self.applied_contract(),
        )

    def _migrations(self) -> list[Migration]:
        return migrations(script_directory((self.head or self.root) / MIGRATIONS))
