"""Whole rehearsals: the real controller, the real app, real load; promoted or rolled back."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from stacks.release.controller import EXIT_OK, EXIT_ROLLED_BACK
from stacks.release.ledger import Outcome
from stacks.release.rehearsal.run import FAULT, Rehearsal, describe, profile
from stacks.release.rehearsal.system import LocalSystem

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[4]


@pytest.fixture(scope="module")
def rehearsal(system: LocalSystem) -> Iterator[Rehearsal]:
    with Rehearsal.on(system) as running:
        yield running


def test_a_healthy_candidate_is_promoted_with_no_failed_request(rehearsal: Rehearsal):
    stable = rehearsal.stable
    result = rehearsal.release({}, profile(), out=lambda line: None)
    assert result.report.exit_code == EXIT_OK, result.report.text()
    assert result.problems() == []
    assert result.load.total_failed == 0
    assert result.load.failed_during_moves == 0
    # Every step was taken, and everything ended on the candidate, the worker with it.
    shares = [move.api.get(result.candidate, 0) for move in result.moves]
    assert shares[:4] == [0, 10, 50, 100]
    assert dict(result.serving) == {result.candidate: 100}
    assert rehearsal.deployer.worker == {result.report.release.worker: 100}  # type: ignore[union-attr]
    assert result.served_after.keys() == {result.candidate}
    assert result.load.served.get(stable.api, 0) > 0
    assert rehearsal.deployer.ledger.outcome(result.report.release) is Outcome.PROMOTED  # type: ignore[arg-type]
    # Both revisions' windows were read at the shared steps, and judged.
    assert {r.revision for r in result.readings} == {stable.api, result.candidate}
    assert rehearsal.stable == result.report.release


def test_a_faulty_candidate_is_rolled_back_and_the_gate_named(rehearsal: Rehearsal):
    stable = rehearsal.stable
    result = rehearsal.release(FAULT, profile(), out=lambda line: None)
    assert result.report.exit_code == EXIT_ROLLED_BACK, result.report.text()
    assert "error-ratio" in result.report.breached
    assert result.problems() == []
    # Everything back on stable, the API and the worker; the candidate recorded as failed.
    assert dict(result.serving) == {stable.api: 100}
    assert rehearsal.deployer.worker == {stable.worker: 100}
    assert result.served_after.keys() == {stable.api}
    assert rehearsal.deployer.ledger.entry_for_api(result.candidate).outcome is Outcome.FAILED  # type: ignore[union-attr]
    # Only the faulty candidate failed requests; stable failed none.
    assert set(result.load.failed) == {result.candidate}
    assert result.report.timings["breach_to_stable_seconds"] >= 0
    report = "\n".join(describe(result))
    assert "breached: error-ratio" in report
    assert "breach to 100 % on stable" in report
    assert rehearsal.stable == stable


def test_the_command_exits_3_names_the_gate_and_leaves_nothing_running(tmp_path: Path):
    root = tmp_path / "rehearsal"
    done = subprocess.run(  # noqa: S603
        [sys.executable, "-m", "stacks.release.rehearsal", "--fault", "--dir", str(root)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == EXIT_ROLLED_BACK, done.stdout + done.stderr
    assert "breached: error-ratio" in done.stdout
    assert "rehearsal: as expected" in done.stdout
    # Postgres and Redis name the directory on their command line, the API revisions in their
    # environment.
    marker = str(root.resolve()).encode()
    left = [
        process.name
        for process in Path("/proc").glob("[0-9]*")
        if marker in _read(process / "cmdline") or marker in _read(process / "environ")
    ]
    assert left == []


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""
