"""Whole rehearsals: the real controller, the real app (API revisions and worker instances), real
load or none; promoted or rolled back, and no job lost or run twice either way."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from release.controller import EXIT_OK, EXIT_ROLLED_BACK, EXIT_USAGE
from release.rehearsal.run import FAULTS, Rehearsal, Result, describe, profile
from release.rehearsal.system import LocalSystem
from stacks.ledger import Outcome

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[3]


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
    # Both worker revisions ran jobs while the split was shared, and every job ran exactly once.
    _no_job_lost_or_run_twice(result)
    assert result.jobs is not None and set(result.jobs.by_revision) == {
        stable.worker,
        result.candidate_worker,
    }


def _no_job_lost_or_run_twice(result: Result) -> None:
    assert result.jobs is not None and result.jobs.submitted > 0
    assert (result.jobs.unfinished, result.jobs.duplicated) == (0, 0), result.jobs


def test_a_faulty_candidate_is_rolled_back_and_the_gate_named(rehearsal: Rehearsal):
    stable = rehearsal.stable
    result = rehearsal.release(FAULTS["api"], profile(), out=lambda line: None)
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
    _no_job_lost_or_run_twice(result)


def test_a_faulty_worker_is_rolled_back_on_its_own_gate_and_every_job_finishes_on_stable(
    rehearsal: Rehearsal,
):
    stable = rehearsal.stable
    result = rehearsal.release(FAULTS["worker"], profile(), out=lambda line: None)
    assert result.report.exit_code == EXIT_ROLLED_BACK, result.report.text()
    assert result.report.breached == ("worker-failure-ratio",)
    assert result.problems() == []
    assert rehearsal.deployer.worker == {stable.worker: 100}
    assert [w.revision for w in rehearsal.system.workers] == [stable.worker] * 10
    # The API was healthy: no request failed.
    assert result.load.total_failed == 0
    _no_job_lost_or_run_twice(result)
    report = "\n".join(describe(result))
    assert "breach to every job on stable" in report


def test_a_migration_that_breaks_the_stable_revision_is_refused_before_any_traffic_moves(
    rehearsal: Rehearsal,
):
    stable = rehearsal.stable
    moves = len(rehearsal.deployer.moves)
    result = rehearsal.release({}, profile(), out=lambda line: None, migration="breaking")
    assert result.report.exit_code == EXIT_USAGE, result.report.text()
    assert result.problems() == []
    assert len(rehearsal.deployer.moves) == moves and result.candidate == ""
    assert dict(result.serving) == {stable.api: 100}
    text = result.report.text()
    assert "refusing the release before it migrates anything" in text
    assert "0900_rehearsal_breaking.py" in text and 'column "prompt" does not exist' in text
    # Nothing migrated: the stable code still reads and writes, and the load saw no failure.
    assert result.load.total_failed == 0
    _no_job_lost_or_run_twice(result)


@pytest.mark.parametrize(
    ("arguments", "code", "named"),
    [
        (["--fault", "api"], EXIT_ROLLED_BACK, "breached: error-ratio"),
        (["--rate", "0"], EXIT_OK, "promoted (exit 0)"),
        (["--rate", "0", "--fault", "worker"], EXIT_ROLLED_BACK, "breached: worker-failure-ratio"),
        (["--migration", "expand"], EXIT_OK, "works on the new schema"),
    ],
    ids=["fault-api", "rate-0", "rate-0-fault-worker", "migration-expand"],
)
def test_the_command_exits_as_the_release_did_and_leaves_nothing_running(
    tmp_path: Path, arguments: list[str], code: int, named: str
):
    root = tmp_path / "rehearsal"
    done = subprocess.run(  # noqa: S603
        [sys.executable, "-m", "release.rehearsal", *arguments, "--dir", str(root)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == code, done.stdout + done.stderr
    assert named in done.stdout
    assert "rehearsal: as expected" in done.stdout
    if "--rate" in arguments:
        assert "synthetic probes sent" in done.stdout
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
