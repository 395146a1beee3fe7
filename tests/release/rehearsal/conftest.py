"""One local system for the rehearsal tests: PostgreSQL, Redis, and API revisions of the real app."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from release.rehearsal.system import ApiProcess, LocalSystem


@dataclass
class Revisions:
    """Three API revisions on the session's system: two healthy, one faulty (slow and failing)."""

    blue: ApiProcess
    green: ApiProcess
    faulty: ApiProcess


# Every request of the faulty revision takes 300 ms more; one in four is a 500.
FAULTS = {"FAULT_DELAY_MS": "300", "FAULT_ERROR_RATIO": "0.25"}


@pytest.fixture(scope="session")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalSystem]:
    local = LocalSystem(tmp_path_factory.mktemp("rehearsal"))
    try:
        yield local.start()
    finally:
        local.stop()


@pytest.fixture(scope="session")
def revisions(system: LocalSystem) -> Revisions:
    names = [system.next_names({})[0] for _ in range(2)]
    faulty = system.next_names(FAULTS)[0]
    return Revisions(
        blue=system.start_api(names[0]),
        green=system.start_api(names[1]),
        faulty=system.start_api(faulty, FAULTS),
    )
