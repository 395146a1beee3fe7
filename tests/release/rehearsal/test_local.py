"""The local Deployer holds plans to Cloud Run's rules: a plan the cloud would refuse fails here too."""

from __future__ import annotations

from pathlib import Path

import pytest

from release.ports import DeployError
from release.rehearsal.local import LocalDeployer, LocalLive
from release.rehearsal.prometheus import PrometheusMetrics
from release.rehearsal.router import WeightedRouter
from release.rehearsal.system import API_SERVICE, WORKER_POOL, LocalSystem
from stacks import release_plan as plan
from stacks.ledger import Ledger, Outcome, Release

pytestmark = pytest.mark.unit
GONE = Release(f"{API_SERVICE}-00000000-0000000", f"{WORKER_POOL}-00000000-0000000")


@pytest.fixture
def deployer(tmp_path: Path) -> LocalDeployer:
    # Nothing is started: these plans must be refused before anything moves.
    return LocalDeployer(LocalSystem(tmp_path), WeightedRouter(), PrometheusMetrics())


def test_shift_takes_traffic_only_plans(deployer):
    with pytest.raises(DeployError, match="traffic-only"):
        deployer.shift(plan.ship(GONE, Ledger()))


def test_a_revision_that_does_not_exist_is_refused_and_nothing_moves(deployer):
    ledger = Ledger().record(GONE, Outcome.PROMOTED, "2026-11-24T00:00:00+00:00")
    with pytest.raises(DeployError, match="does not exist"):
        deployer.shift(plan.settle(GONE, ledger))
    live = LocalLive(deployer).read()
    assert (dict(live.api), dict(live.worker), live.ledger) == ({}, {}, Ledger())
    assert deployer.moves == []
