"""`python -m release`: what it refuses before touching anything, and its small commands."""

from __future__ import annotations

import shutil

import pytest

from release import __main__ as cli
from release.controller import EXIT_OK, EXIT_USAGE, Report
from tools.render import stack_config

pytestmark = pytest.mark.unit


def test_a_stack_that_pins_traffic_by_hand_is_refused():
    config = {
        "liftoff:api": {"traffic": [{"revision": "liftoff-prod-api-aaaaaaaa-1111111", "percent": 100}]},
        "liftoff:worker": {"split": [{"revision": "latest", "percent": 100}]},
    }
    _, problems = cli.preflight("prod", config)
    assert [p.split(":")[0] + ":" + p.split(":")[1] for p in problems] == [
        "liftoff:api.traffic",
        "liftoff:worker.split",
    ]
    assert "make rollback" in problems[0]


def test_invalid_release_settings_are_named_by_key():
    settings, problems = cli.preflight("prod", {"liftoff:release": {"steps": [10, 50], "soakSeconds": 60}})
    assert any(p.startswith("liftoff:release.steps: must end at 100") for p in problems)
    assert any(p.startswith("liftoff:release.soakSeconds: 60 is shorter") for p in problems)
    good, none = cli.preflight("prod", {"liftoff:release": {"steps": [25, 100], "approval": True}})
    assert none == [] and good.steps == (25, 100) and good.approval


def test_a_release_its_own_traffic_cannot_judge_is_refused_before_it_ships(monkeypatch, capsys):
    prod = stack_config("prod")
    assert cli.preflight("prod", prod)[1] == []
    quiet = {**prod, "liftoff:usage": {**prod["liftoff:usage"], "requestsPerMonth": 200_000}}
    monkeypatch.setattr(cli, "stack_config", lambda stack: quiet)
    assert cli.main(["release", "--stack", "prod"]) == EXIT_USAGE
    error = capsys.readouterr().err
    assert "liftoff:release.minRequests: 200 requests cannot be reached in the first step" in error
    assert "liftoff:usage.requestsPerMonth declares: 200,000" in error


def test_release_refuses_before_anything_when_config_is_wrong(monkeypatch, capsys):
    monkeypatch.setattr(cli, "stack_config", lambda stack: {"liftoff:release": {"steps": [100, 10]}})
    assert cli.main(["release", "--stack", "prod"]) == EXIT_USAGE
    assert "liftoff:release.steps" in capsys.readouterr().err


@pytest.mark.skipif(
    shutil.which("pulumi") is not None, reason="checks the message shown without the Pulumi CLI"
)
def test_release_needs_the_pulumi_cli(monkeypatch, capsys):
    monkeypatch.setattr(cli, "stack_config", lambda stack: {"liftoff:release": {}})
    assert cli.main(["rollback", "--stack", "staging"]) == EXIT_USAGE
    assert "Pulumi CLI is required" in capsys.readouterr().err


def test_the_audience_is_the_api_service_name(capsys):
    assert cli.main(["audience", "--stack", "prod"]) == 0
    assert capsys.readouterr().out.strip() == "liftoff-prod-api"


def test_a_rollback_is_not_held_back_by_release_settings_or_pins(monkeypatch, capsys):
    config = {
        "liftoff:release": {"steps": [100, 10]},
        "liftoff:api": {"traffic": [{"revision": "latest", "percent": 100}]},
    }
    monkeypatch.setattr(cli, "stack_config", lambda stack: config)
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert cli.main(["rollback", "--stack", "prod"]) == EXIT_USAGE
    # Refused only for want of the CLI, not for the settings.
    assert (
        capsys.readouterr().err.strip()
        == "error: the Pulumi CLI is required (https://www.pulumi.com/docs/install/)"
    )


def test_an_unfinished_only_rollback_is_asked_of_the_controller(monkeypatch, capsys):
    asked: dict[str, object] = {}

    def run(command: str, stack: str, settings: object, **flags: bool) -> Report:
        asked.update(flags, command=command, stack=stack)
        return Report(EXIT_OK, "settled")

    monkeypatch.setattr(cli, "stack_config", lambda stack: {})
    monkeypatch.setattr(shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(cli, "run", run)
    assert cli.main(["rollback", "--stack", "prod", "--unfinished"]) == EXIT_OK
    assert asked["command"] == "rollback" and asked["unfinished"] is True and asked["further"] is False
    assert "rollback prod: settled (exit 0)" in capsys.readouterr().out
    # One release further back, or only an unfinished one: not both.
    with pytest.raises(SystemExit):
        cli.main(["rollback", "--stack", "prod", "--further", "--unfinished"])
