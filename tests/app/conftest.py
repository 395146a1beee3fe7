"""Fixtures of the app's tests that choose among the session's databases."""

from __future__ import annotations

import pytest


@pytest.fixture(params=["postgres", "supabase"])
def database(request: pytest.FixtureRequest) -> str:
    """The DSN of a migrated database as the app's own role: plain PostgreSQL, where that role
    is a superuser, and one set up as Supabase sets one up, where it is not."""
    if request.param == "supabase":
        dsn: str = request.getfixturevalue("supabase").dsn
    else:
        dsn = request.getfixturevalue("servers").dsn
    return dsn
