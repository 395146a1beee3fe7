"""docs/configuration.md is generated from the settings contract, and kept in step with it."""

from __future__ import annotations

import pytest

from tools import configuration_doc
from tools.configuration_doc import COMMAND, DOC, render

pytestmark = pytest.mark.unit


def test_the_committed_document_matches_the_settings_contract():
    expected = render()
    current = DOC.read_text(encoding="utf-8") if DOC.exists() else ""
    assert current == expected, (
        f"{DOC.name} is out of date with stacks/settings/, stacks/settings/release.py or"
        f" app/settings.py: regenerate it with `{COMMAND}` (python -m tools.configuration_doc)"
    )


def test_every_key_and_variable_is_described():
    rows = [line.strip().strip("|").split(" | ") for line in render().splitlines() if line.startswith("| `")]
    undescribed = [cells[0].strip() for cells in rows if not cells[-1].strip()]
    assert len(rows) > 100 and not undescribed, undescribed


def test_every_section_key_is_listed_under_its_full_name():
    text = render()
    for key in ("`liftoff:api.minInstances`", "`liftoff:usage.requestsPerMonth`", "`liftoff:release.steps`"):
        assert key in text
    assert "`gcp:project`" in text and "`supabase:accessToken`" in text and "`WORKER_CONCURRENCY`" in text


def test_check_mode_reports_a_stale_document(tmp_path, monkeypatch, capsys):
    stale = tmp_path / "configuration.md"
    stale.write_text("# Configuration\n")
    monkeypatch.setattr(configuration_doc, "DOC", stale)
    monkeypatch.setattr(configuration_doc, "ROOT", tmp_path)
    assert configuration_doc.main(["--check"]) == 1
    assert COMMAND in capsys.readouterr().err
    assert configuration_doc.main([]) == 0
    assert configuration_doc.main(["--check"]) == 0
    assert stale.read_text() == render()
