"""ReleaseLedger: the release history in the stack's state, and its provider."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pulumi
import pytest
from pulumi.dynamic.dynamic import serialize_provider

from components.ledger import EMPTY, LedgerError, ReleaseLedger, ReleaseLedgerProvider
from tools.render import render

pytestmark = pytest.mark.unit

ENTRIES = json.dumps([{"api": "a-1", "worker": "w-1", "outcome": "promoted", "at": "t", "reason": ""}])


def test_create_and_update_return_the_inputs_and_call_nothing():
    provider = ReleaseLedgerProvider()
    created = provider.create({"entries": EMPTY})
    assert created.outs == {"entries": EMPTY}
    assert created.id
    updated = provider.update(created.id, {"entries": EMPTY}, {"entries": ENTRIES})
    assert updated.outs == {"entries": ENTRIES}
    assert provider.read(created.id, {"entries": ENTRIES}).outs == {"entries": ENTRIES}
    provider.delete(created.id, {"entries": ENTRIES})


def test_diff_compares_the_entries_as_data():
    provider = ReleaseLedgerProvider()
    assert provider.diff("id", {"entries": ENTRIES}, {"entries": ENTRIES}).changes is False
    respaced = json.dumps(json.loads(ENTRIES), indent=2)
    assert provider.diff("id", {"entries": ENTRIES}, {"entries": respaced}).changes is False
    assert provider.diff("id", {"entries": EMPTY}, {"entries": ENTRIES}).changes is True


@pytest.mark.parametrize("entries", ["not json", "{}", "[1, 2]", '"[]"'])
def test_check_names_entries_that_are_not_a_list_of_objects(entries):
    result = ReleaseLedgerProvider().check({}, {"entries": entries})
    (failure,) = result.failures
    assert failure.property == "entries"
    assert "entries" in failure.reason


def test_check_accepts_a_ledger():
    assert ReleaseLedgerProvider().check({}, {"entries": ENTRIES}).failures == []


def test_the_provider_unpickles_in_a_separate_process():
    """Pulumi's dynamic-provider host unpickles the provider in its own process, on this venv."""
    blob = serialize_provider(ReleaseLedgerProvider())
    code = (
        "import base64, sys, dill; p = dill.loads(base64.b64decode(sys.stdin.read()));"
        " print(type(p).__module__, type(p).__name__, p.create({'entries': '[]'}).outs)"
    )
    # The project root on the path, as `make install` puts it there for the provider host.
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    result = subprocess.run(
        [sys.executable, "-c", code],
        input=blob,
        capture_output=True,
        text=True,
        cwd="/",
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[:2] == ["components.ledger", "ReleaseLedgerProvider"]


def _program(entries: Any, opts: pulumi.ResourceOptions | None = None) -> dict[str, Any]:
    ledger = ReleaseLedger("release-ledger", entries, opts)
    return {"entries": ledger.entries}


def test_registers_its_type_and_entries():
    rendering = render("prod", {}, {}, program=lambda: _program(ENTRIES))
    (registered,) = rendering.of_type(ReleaseLedger.TYPE)
    assert registered.custom
    assert registered.inputs == {"entries": ENTRIES}
    assert set(registered.inputs) <= ReleaseLedger.PROPERTIES
    assert rendering.outputs["entries"] == ENTRIES


def test_plain_entries_are_checked_before_anything_is_registered():
    with pytest.raises(LedgerError, match="entries: must be a JSON list"):
        ReleaseLedger("release-ledger", '{"api": "x"}')
