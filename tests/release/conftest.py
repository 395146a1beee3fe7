"""Doubles of the Google APIs the release reads, each served locally through one handler function."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack

import pytest

from tests.http_double import Handler, Served, serve_json

# The rendered stacks, shared with tests/stacks (the release drives the program they render).
from tests.stacks.conftest import prod  # noqa: F401


@pytest.fixture
def serve() -> Iterator[Callable[[Handler], Served]]:
    """Start doubles on 127.0.0.1 (free ports) for the test; each answers through its handler."""
    with ExitStack() as running:
        yield lambda handle: running.enter_context(serve_json(handle))
