"""The release's schema gate: every rollback target's code on the new schema, before anything migrates.

The gate itself (the code at a commit, on local servers) is tested in tests/release/compat;
here a double answers for it, by commit, and the controller's decisions are checked: refuse,
hold the contract migrations, or run them and record what the schema no longer supports.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field

import pytest

from release.compat.report import CompatReport, Finding
from release.controller import EXIT_ERROR, EXIT_OK, EXIT_USAGE, Controller
from stacks.ledger import Outcome
from stacks.settings.release import ReleaseSettings
from tests.release.world import Approvals, World, controller_over, release

pytestmark = pytest.mark.unit

SETTINGS = ReleaseSettings(steps=(10, 50, 100), soak_seconds=300, min_requests=100)
A, B, C, D = release(1), release(2), release(3), release(4)


@dataclass
class Gate:
    """Answers the gate's question by commit: which commits break on the expand migrations, and
    which on the contract ones too; records what it was asked."""

    breaks: set[str] = field(default_factory=set)
    breaks_with_contract: set[str] = field(default_factory=set)
    pending: list[str] = field(default_factory=list)
    asked: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)

    def pending_contract(self) -> list[str]:
        return list(self.pending)

    def check(self, commit: str, *, allow_contract: Collection[str] = ()) -> CompatReport:
        self.asked.append((commit, tuple(allow_contract)))
        report = CompatReport(base=commit, base_commit=commit, head="the release")
        broken = commit in self.breaks or (allow_contract and commit in self.breaks_with_contract)
        if broken:
            report.findings.append(Finding("base.read-own", 'column "prompt" does not exist', ("0099",)))
        return report


def controller(world: World, gate: Gate, source: str) -> Controller:
    return controller_over(world, SETTINGS, Approvals(), schema=gate, source=source)


def released(world: World, gate: Gate, nxt, source: str) -> None:
    world.next_release = nxt
    report = controller(world, gate, source).release()
    assert report.exit_code == EXIT_OK, report.text()


@pytest.fixture
def world() -> tuple[World, Gate]:
    """A, then B, then C promoted, shipped from commits a, b and c; C serves."""
    w, gate = World(), Gate()
    for nxt, commit in ((A, "a"), (B, "b"), (C, "c")):
        released(w, gate, nxt, commit)
    w.next_release = D
    gate.asked.clear()
    return w, gate


def test_every_rollback_target_is_checked_once_per_commit_before_anything_ships(world):
    w, gate = world
    ups = len(w.ups)
    report = controller(w, gate, "d").release()
    assert report.exit_code == EXIT_OK
    assert gate.asked[:3] == [("c", ()), ("b", ()), ("a", ())]
    assert w.ups[ups] == "ship"


def test_a_migration_that_breaks_a_rollback_target_is_refused_before_it_migrates(world):
    w, gate = world
    gate.breaks.add("b")
    ups = len(w.ups)
    report = controller(w, gate, "d").release()
    assert report.exit_code == EXIT_USAGE and report.outcome == "refused"
    assert len(w.ups) == ups, "nothing shipped, nothing migrated, no traffic moved"
    text = report.text()
    assert "its migrations break" in text and "(commit b)" in text
    assert 'column "prompt" does not exist' in text and "docs/schema-changes.md" in text
    assert w.read().api == {C.api: 100}


def test_contract_migrations_are_held_while_the_stable_release_needs_the_old_schema(world):
    w, gate = world
    gate.pending = ["0099"]
    gate.breaks_with_contract.add("c")
    report = controller(w, gate, "d").release()
    assert report.exit_code == EXIT_OK
    assert any("holding contract migrations 0099" in line and C.api in line for line in report.lines)
    assert w.shipped[-1].allowed_contract == ()
    assert w.ledger.floor is not None and w.ledger.floor.release == A


def test_contract_migrations_run_once_stable_works_and_older_releases_are_recorded_unsupported(world):
    w, gate = world
    gate.pending = ["0099"]
    gate.breaks_with_contract.update({"a", "b"})
    report = controller(w, gate, "d").release()
    assert report.exit_code == EXIT_OK
    assert w.shipped[-1].allowed_contract == ("0099",)
    assert w.ledger.unsupported(A).startswith("contract migrations 0099 ran with the release shipped from d")
    assert w.ledger.unsupported(B) and not w.ledger.unsupported(C)
    assert w.ledger.floor is not None and w.ledger.floor.release == C
    # A rollback goes to C; one further back, to B, is refused: its code would meet a schema
    # it no longer fits, and traffic cannot undo a contract migration.
    assert controller(w, gate, "d").rollback().exit_code == EXIT_OK
    assert w.read().api == {C.api: 100}
    refused = controller(w, gate, "d").rollback(further=True)
    assert refused.exit_code == EXIT_USAGE
    reason = refused.lines[-1]
    assert f"refusing to roll back to {B.api}" in reason
    assert f"the oldest release it supports is {C.api} (commit c)" in reason
    assert "Roll forward instead" in reason
    assert w.read().api == {C.api: 100}
    assert w.ledger.outcome(D) is Outcome.ROLLED_BACK


def test_a_gate_that_cannot_run_refuses_rather_than_guesses(world):
    w, gate = world

    def broken(commit: str, *, allow_contract: Collection[str] = ()) -> CompatReport:
        return CompatReport(base=commit, base_commit=commit, head="the release", error="git: unknown commit")

    gate.check = broken
    ups = len(w.ups)
    report = controller(w, gate, "d").release()
    assert (report.exit_code, report.outcome) == (EXIT_ERROR, "error")
    assert "the schema gate could not check" in report.lines[-1] and "unknown commit" in report.lines[-1]
    assert len(w.ups) == ups and w.read().api == {C.api: 100}


def test_unsupported_is_recorded_for_every_release_of_a_commit_and_for_code_nobody_can_check(world):
    w, gate = world
    # B was shipped twice from commit b (a retried release, say), and E has no commit recorded.
    b_again, e = release(5), release(6)
    w.ledger = (
        w.ledger.record(b_again, Outcome.PROMOTED, "t", commit="b")
        .record(e, Outcome.PROMOTED, "t")
        .record(C, Outcome.PROMOTED, "t")
    )
    gate.pending = ["0099"]
    gate.breaks_with_contract.add("b")
    report = controller(w, gate, "d").release()
    assert report.exit_code == EXIT_OK
    assert all(w.ledger.unsupported(r) for r in (B, b_again, e))
    assert not w.ledger.unsupported(A) and not w.ledger.unsupported(C)
    assert [t.release for t in w.ledger.rollback_targets()] == [D, C, A]


def test_the_unsupported_record_is_written_before_the_update_that_runs_the_contract_migrations(world):
    w, gate = world
    gate.pending = ["0099"]
    gate.breaks_with_contract.add("a")
    w.failing_ups = 1  # the ship fails after its migrations job ran
    ups = len(w.ups)
    report = controller(w, gate, "d").release()
    assert report.exit_code == EXIT_ERROR
    assert w.ups[ups:] == ["shift", "ship"]
    assert w.ledger.unsupported(A), "the record stands although the release failed"
    assert w.read().api == {C.api: 100}
