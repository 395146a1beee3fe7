"""Pure parts of the worker runtime."""

from __future__ import annotations

import pytest

from app.worker.runner import retry_delay


@pytest.mark.unit
def test_retry_delay():
    for attempt in range(1, 8):
        ceiling = min(10.0, 0.5 * 2 ** (attempt - 1))
        for _ in range(50):
            assert ceiling / 2 <= retry_delay(attempt, 0.5, 10.0) <= ceiling
    assert retry_delay(1, 0.5, 10.0, retry_after=42.0) == 42.0
    assert retry_delay(1, 0.5, 10.0, retry_after=-1.0) == 0.0
