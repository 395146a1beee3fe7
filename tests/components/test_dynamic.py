"""DynamicResource: registering many dynamic resources in one process leaves pickle as it was."""

from __future__ import annotations

import json
import pickle
from typing import Any

import pulumi
import pytest
from pulumi.dynamic.dynamic import serialize_provider

from components.dynamic import unwrap_pickler
from components.ledger import ReleaseLedger, ReleaseLedgerProvider

pytestmark = pytest.mark.unit

STDLIB = "_Pickler._batch_setitems"
# Deep enough that a wrapper per serialization would pass Python's default recursion limit.
DEEP = json.dumps([{"revisions": {"api": {"name": f"a-{i}", "tags": {"t": {"u": i}}}}} for i in range(3)])


def wrappers() -> int:
    """How many closures stand between pickle's dictionary writer and the standard library's."""
    method: Any = pickle._Pickler._batch_setitems  # type: ignore[attr-defined]
    depth = 0
    while method.__qualname__ != STDLIB:
        (method,) = [c.cell_contents for c in method.__closure__ if callable(c.cell_contents)]
        depth += 1
    return depth


def test_the_sdk_wraps_pickle_once_more_on_every_serialization():
    """The behaviour DynamicResource undoes; if the SDK stops doing this, the base can go."""
    unwrap_pickler()
    for _ in range(3):
        serialize_provider(ReleaseLedgerProvider())
    assert wrappers() == 3
    unwrap_pickler()
    assert wrappers() == 0


@pytest.mark.usefixtures("mocks")
def test_a_thousand_registrations_still_serialize_a_provider():
    @pulumi.runtime.test
    def register() -> None:
        for i in range(1_000):
            ReleaseLedger(f"ledger-{i}", DEEP)

    register()
    assert wrappers() == 0
    assert serialize_provider(ReleaseLedgerProvider())  # would overflow the stack without the base
