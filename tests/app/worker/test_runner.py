"""Pure parts of the worker runtime."""

from __future__ import annotations

import pytest

from app.worker.providers import ProviderError
from app.worker.runner import Failure, classify, retry_delay


@pytest.mark.unit
def test_retry_delay():
    for attempt in range(1, 8):
        ceiling = min(10.0, 0.5 * 2 ** (attempt - 1))
        for _ in range(50):
            assert ceiling / 2 <= retry_delay(attempt, 0.5, 10.0) <= ceiling
    assert retry_delay(1, 0.5, 10.0, retry_after=42.0) == 42.0
    assert retry_delay(1, 0.5, 10.0, retry_after=-1.0) == 0.0


@pytest.mark.unit
def test_classify_follows_the_provider_error():
    assert classify(ProviderError("429", retryable=True, retry_after=3.0)) == Failure(
        retryable=True, retry_after=3.0
    )
    assert classify(ProviderError("400", retryable=False)) == Failure(retryable=False)


@pytest.mark.unit
def test_classify_retries_any_other_exception_as_a_crash():
    for exc in (RuntimeError("boom"), KeyError("x"), TimeoutError()):
        assert classify(exc) == Failure(retryable=True, retry_after=None, crashed=True)
