"""GrantPropagation's provider at the engine's boundary: it waits only when a grant is new."""

from __future__ import annotations

import pytest

from components.propagation import TYPICAL_SECONDS, GrantPropagationProvider, new_grants

pytestmark = pytest.mark.unit

GRANT_A = "projects/p/secrets/liftoff-prod-database-url/roles/secretmanager.secretAccessor/serviceAccount:a"
GRANT_B = "projects/p/secrets/liftoff-prod-redis-url/roles/secretmanager.secretAccessor/serviceAccount:a"


def provider() -> tuple[GrantPropagationProvider, list[float]]:
    slept: list[float] = []
    return GrantPropagationProvider(sleep=slept.append), slept


def test_creating_waits_the_typical_propagation_time():
    runner, slept = provider()
    props = {"grants": [GRANT_A], "seconds": TYPICAL_SECONDS}
    result = runner.create(props)
    assert slept == [120.0]
    assert result.outs == props


def test_only_a_new_grant_is_a_change():
    runner, _ = provider()
    olds = {"grants": [GRANT_A], "seconds": 120}
    assert not runner.diff("g", olds, {"grants": [GRANT_A], "seconds": 120}).changes
    assert not runner.diff("g", {"grants": [GRANT_A, GRANT_B]}, {"grants": [GRANT_A]}).changes
    assert runner.diff("g", olds, {"grants": [GRANT_B, GRANT_A], "seconds": 120}).changes


def test_an_update_with_a_new_grant_waits_again():
    runner, slept = provider()
    runner.update("g", {"grants": [GRANT_A]}, {"grants": [GRANT_A, GRANT_B], "seconds": 120})
    assert slept == [120.0]


def test_a_grant_not_known_yet_counts_as_new():
    assert new_grants([GRANT_A], [GRANT_A, None]) == ["None"]
    assert new_grants(None, [GRANT_A]) == [GRANT_A]
