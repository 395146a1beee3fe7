"""The local weighted router: exact shares, atomic moves, no request lost or moved mid-flight."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest

from release.rehearsal.load import LoadGenerator, LoadSummary
from release.rehearsal.router import (
    REVISION_HEADER,
    RouterError,
    SmoothWeighted,
    WeightedRouter,
    Weights,
)
from release.rehearsal.system import LocalSystem
from tests.release.rehearsal.conftest import Revisions

pytestmark = pytest.mark.integration


@pytest.mark.unit
@pytest.mark.parametrize(
    "split", [{"a": 10, "b": 90}, {"a": 50, "b": 50}, {"a": 0, "b": 100}, {"a": 33, "b": 67}]
)
def test_each_hundred_picks_give_each_revision_its_percent(split):
    picker = SmoothWeighted(Weights.of(split))
    for _ in range(3):
        picks = Counter(picker.pick() for _ in range(100))
        assert {name: picks.get(name, 0) for name in split} == split


@pytest.mark.unit
def test_picks_are_interleaved_not_bunched():
    picker = SmoothWeighted(Weights.of({"a": 50, "b": 50}))
    picks = [picker.pick() for _ in range(10)]
    assert all(first != second for first, second in zip(picks, picks[1:], strict=False))


@pytest.mark.unit
@pytest.mark.parametrize("split", [{"a": 50, "b": 40}, {"a": 110, "b": -10}, {}])
def test_weights_must_be_percents_adding_up_to_100(split):
    with pytest.raises(RouterError, match="adding up to 100"):
        Weights.of(split)


@pytest.fixture
def router(revisions: Revisions) -> Iterator[WeightedRouter]:
    proxy = WeightedRouter()
    for api in (revisions.blue, revisions.green, revisions.faulty):
        proxy.add(api.name, api.url)
    proxy.set_weights({revisions.blue.name: 100})
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.stop()


def test_an_unknown_revision_is_refused_and_the_split_stays(router, revisions):
    with pytest.raises(RouterError, match="no such revision"):
        router.set_weights({"liftoff-local-api-nope": 100})
    assert router.weights() == {revisions.blue.name: 100}


def test_requests_follow_the_weights_and_say_who_served_them(router, revisions):
    router.set_weights({revisions.blue.name: 30, revisions.green.name: 70})
    with httpx.Client(base_url=router.url) as http:
        served = Counter(http.get("/health").headers[REVISION_HEADER] for _ in range(100))
        response = http.get("/v1/generations")
    assert served == {revisions.blue.name: 30, revisions.green.name: 70}
    # The app's own answer comes through: status, headers and the error body.
    assert response.status_code == 401
    assert response.json()["error"]["code"]


def test_moves_under_load_fail_no_request(router, revisions, system: LocalSystem):
    blue, green = revisions.blue.name, revisions.green.name
    load = LoadGenerator(router.url, system.token(), rate=80).start()
    moves: list[tuple[float, float]] = []
    try:
        load.wait_for(20)
        for split in [(90, 10), (50, 50), (0, 100), (100, 0)] * 5:
            started = time.time()
            router.set_weights({blue: split[0], green: split[1]})
            moves.append((started, time.time()))
            time.sleep(0.15)
        load.wait_for(len(load.outcomes) + 20)
    finally:
        load.stop()
    summary = LoadSummary.of(load.outcomes, moves)
    assert summary.total_failed == 0, summary
    assert set(summary.served) == {blue, green}
    assert summary.statuses.keys() <= {200, 202}


def test_a_request_in_flight_finishes_where_it_started(router, revisions):
    router.set_weights({revisions.faulty.name: 100})
    answers: list[httpx.Response] = []

    def slow_request() -> None:
        with httpx.Client(base_url=router.url, timeout=10) as http:
            answers.append(http.get("/v1/generations"))

    thread = threading.Thread(target=slow_request)
    thread.start()
    while not router.in_flight(revisions.faulty.name):
        time.sleep(0.001)
    router.set_weights({revisions.blue.name: 100})
    drained = router.drain({revisions.faulty.name}, timeout=10)
    thread.join()
    assert answers[0].headers[REVISION_HEADER] == revisions.faulty.name
    assert answers[0].status_code in (401, 500)  # the faulty revision's own answer, after its delay
    assert drained > 0
    assert router.in_flight(revisions.faulty.name) == 0
    with httpx.Client(base_url=router.url) as http:
        assert http.get("/health").headers[REVISION_HEADER] == revisions.blue.name
