"""Each committed stack file is deployable by CI, or the check names exactly what is missing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tools.deployable import REPLACE, STACKS, main, problems, required_secrets
from tools.render import ROOT

pytestmark = pytest.mark.unit

TOOL = ROOT / "tools" / "deployable.py"
KMS = "gcpkms://projects/liftoff-prod-1/locations/europe-west1/keyRings/liftoff/cryptoKeys/pulumi-secrets"


def is_template(path: Path) -> bool:
    return any(REPLACE.search(line) for line in path.read_text().splitlines())


def completed(stack: str, tmp_path: Path, drop: str | None = None, **config: object) -> Path:
    """The committed stack file as `pulumi stack init` and `config set --secret` leave it."""
    lines = [line.split(" # REPLACE")[0] for line in (ROOT / f"Pulumi.{stack}.yaml").read_text().splitlines()]
    document = yaml.safe_load("\n".join(lines))
    document["secretsprovider"] = KMS
    document["encryptedkey"] = "CiQA2x0bL0VtbWVkIGtleSBjaXBoZXJ0ZXh0"
    document["config"].update(config)
    for key in required_secrets(document["config"]):
        document["config"][key] = {"secure": "v1:c2FsdA==:Y2lwaGVydGV4dA=="}
    if drop is not None:
        del document["config"][drop]
    path = tmp_path / f"Pulumi.{stack}.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


@pytest.mark.parametrize("stack", STACKS)
def test_each_committed_stack_file_is_deployable_by_ci(stack):
    path = ROOT / f"Pulumi.{stack}.yaml"
    found = problems(path)
    if not is_template(path):
        assert found == []
        return
    # Still the template this repository ships: the check names every gap, by key.
    assert found[:5] == [
        "secretsprovider: missing (pulumi stack init --secrets-provider gcpkms://..., then commit the file)",
        "encryptedkey: missing (written by pulumi stack init with the KMS provider; commit it)",
        "liftoff:openaiApiKey: missing (pulumi config set --secret liftoff:openaiApiKey ...)",
        "supabase:accessToken: missing (pulumi config set --secret supabase:accessToken ...)",
        "upstash:apiKey: missing (pulumi config set --secret upstash:apiKey ...)",
    ]
    assert [p.rsplit(" (line", 1)[0] for p in found[5:]] == [
        "gcp:project: still the placeholder marked REPLACE",
        "upstash:email: still the placeholder marked REPLACE",
        "organizationId: still the placeholder marked REPLACE",
        "email: still the placeholder marked REPLACE",
    ]


@pytest.mark.parametrize("stack", STACKS)
def test_a_completed_stack_file_passes(stack, tmp_path):
    assert problems(completed(stack, tmp_path)) == []


def test_a_secret_set_only_on_a_laptop_is_named(tmp_path):
    path = completed("prod", tmp_path, drop="supabase:accessToken")
    assert problems(path) == [
        "supabase:accessToken: missing (pulumi config set --secret supabase:accessToken ...)"
    ]


def test_a_secret_in_clear_text_is_named(tmp_path):
    path = completed("prod", tmp_path)
    document = yaml.safe_load(path.read_text())
    document["config"]["upstash:apiKey"] = "plain-api-key"
    path.write_text(yaml.safe_dump(document))
    assert problems(path) == [
        "upstash:apiKey: in clear text; set it with --secret so the file holds only ciphertext"
    ]


def test_an_adopted_database_needs_its_password(tmp_path):
    adopt = {"mode": "adopt", "projectRef": "abcdefghijklmnopqrst", "region": "eu-west-1"}
    path = completed("staging", tmp_path, drop="liftoff:supabaseDbPassword", **{"liftoff:supabase": adopt})
    assert problems(path) == [
        "liftoff:supabaseDbPassword: missing (pulumi config set --secret liftoff:supabaseDbPassword ...)"
    ]


def test_a_local_provider_is_not_decryptable_in_ci(tmp_path):
    path = completed("staging", tmp_path)
    document = yaml.safe_load(path.read_text())
    document["secretsprovider"] = "passphrase"
    path.write_text(yaml.safe_dump(document))
    assert problems(path) == ["secretsprovider: 'passphrase' is not gcpkms://: CI has no passphrase or key"]


def test_the_command_exits_non_zero_and_lists_each_problem(tmp_path, capsys):
    completed("staging", tmp_path)
    assert main(["--root", str(tmp_path), "--stack", "staging"]) == 0
    assert capsys.readouterr().out == "staging: deployable by CI\n"
    result = subprocess.run(
        [sys.executable, str(TOOL), "--root", str(tmp_path), "--stack", "prod"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        "prod: not deployable by CI:",
        "  - Pulumi.prod.yaml: missing (pulumi stack init, then commit the file)",
    ]


def test_the_release_checks_the_stack_file_before_it_deploys():
    release = yaml.safe_load((ROOT / ".github" / "workflows" / "release.yml").read_text())
    runs = [str(s.get("run", "")) for s in release["jobs"]["release"]["steps"]]
    check = next(i for i, run in enumerate(runs) if "tools/deployable.py" in run)
    # The release controller runs every `pulumi up` (release/automation.py).
    deploy = next(i for i, run in enumerate(runs) if "-m release release" in run)
    assert check < deploy
