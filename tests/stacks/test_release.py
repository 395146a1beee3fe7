"""Staging a release: the candidate ships at 0 % beside the stable revision."""

from __future__ import annotations

import pytest

from components.traffic import parse_targets
from stacks.release import stage
from stacks.render import stack_config
from tests.stacks.conftest import render_stack

pytestmark = pytest.mark.unit


def test_stage_pins_stable_and_ships_latest_at_zero():
    stable = "liftoff-prod-api-3dfa7901-826fedc"
    staged = stage({"config": stack_config("prod")}, stable)
    traffic = staged["config"]["liftoff:api"]["traffic"]
    targets = parse_targets(traffic, key="t", service="liftoff-prod-api")
    assert [(t.revision, t.percent, t.tag) for t in targets] == [
        (stable, 100, "stable"),
        ("latest", 0, "candidate"),
    ]
    rendering = render_stack("prod", {"liftoff:api": staged["config"]["liftoff:api"]})
    assert set(rendering.outputs["api_candidate_urls"]) == {"candidate"}


def test_stage_rejects_a_revision_of_another_service(capsys):
    from stacks.release import main

    assert main(["stage", "--stack", "prod", "--stable", "liftoff-staging-api-abc"]) == 2
    assert "is not a revision of liftoff-prod-api" in capsys.readouterr().err
