"""Traffic splits and revision names."""

from __future__ import annotations

import pytest

from components.traffic import (
    LATEST,
    TrafficError,
    TrafficTarget,
    candidate_tags,
    parse_targets,
    revision_name,
)

pytestmark = pytest.mark.unit

SERVICE = "liftoff-prod-api"
DIGEST = "sha256:" + "ab" * 32


def parse(raw: object, **kwargs: object) -> tuple[TrafficTarget, ...]:
    return parse_targets(raw, key="liftoff:api.traffic", service=SERVICE, **kwargs)  # type: ignore[arg-type]


def test_latest_takes_all_by_default_shape():
    assert parse([{"revision": "latest", "percent": 100}]) == (TrafficTarget(100, LATEST, None),)


def test_canary_and_rollback_shapes():
    canary = parse(
        [
            {"revision": f"{SERVICE}-3dfa7901-826fedc", "percent": 90, "tag": "stable"},
            {"revision": "latest", "percent": 10, "tag": "candidate"},
        ]
    )
    assert [t.percent for t in canary] == [90, 10]
    assert candidate_tags(canary) == ["candidate"]
    rollback = parse([{"revision": f"{SERVICE}-3dfa7901-826fedc", "percent": 100}])
    assert rollback[0].revision == f"{SERVICE}-3dfa7901-826fedc"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ([], "non-empty list"),
        ("latest", "non-empty list"),
        ([{"revision": "latest", "percent": 90}], "sum to 90, not 100"),
        (
            [{"revision": "latest", "percent": 50}, {"revision": "latest", "percent": 50}],
            "more than one target is 'latest'",
        ),
        ([{"revision": "latest", "percent": 101}], r"\[0\].percent: must be a whole number"),
        ([{"revision": "latest", "percent": 12.5}], r"\[0\].percent"),
        ([{"revision": "latest", "percent": True}], r"\[0\].percent"),
        ([{"revision": "latest", "percent": 100, "tag": "Bad_Tag"}], r"\[0\].tag: 'Bad_Tag' is not DNS-safe"),
        ([{"revision": "latest", "percent": 100, "tag": "x" * 47}], r"\[0\].tag"),
        (
            [
                {"revision": "latest", "percent": 50, "tag": "a"},
                {"revision": f"{SERVICE}-1", "percent": 50, "tag": "a"},
            ],
            "tags must be unique",
        ),
        (
            [{"revision": "stable", "percent": 100}],
            r"\[0\].revision: 'stable' is not a revision of liftoff-prod-api",
        ),
        ([{"revision": "other-service-abc", "percent": 100}], "pin a revision by its full name"),
        ([{"revision": "", "percent": 100}], r"\[0\].revision: must be 'latest' or a revision name"),
        ([{"percent": 100, "weight": 3}], r"\[0\]: unknown keys \['weight'\]"),
        (
            [{"revision": f"{SERVICE}-a", "percent": 50}, {"revision": f"{SERVICE}-a", "percent": 50}],
            "revision listed twice",
        ),
    ],
)
def test_invalid_splits_name_the_key(raw, message):
    with pytest.raises(TrafficError, match=message) as caught:
        parse(raw)
    assert str(caught.value).startswith("liftoff:api.traffic")


def test_worker_splits_take_no_tags():
    with pytest.raises(TrafficError, match="take no tags"):
        parse([{"revision": "latest", "percent": 100, "tag": "x"}], tags_allowed=False)


def test_revision_names_follow_digest_and_template():
    name = revision_name(SERVICE, DIGEST, {"env": {"A": "1"}})
    assert name.startswith(f"{SERVICE}-abababab-")
    assert len(name) <= 63
    assert revision_name(SERVICE, DIGEST, {"env": {"A": "1"}}) == name
    assert revision_name(SERVICE, DIGEST, {"env": {"A": "2"}}) != name
    assert revision_name(SERVICE, "sha256:" + "cd" * 32, {"env": {"A": "1"}}) != name


def test_revision_name_needs_a_digest_and_a_short_service():
    with pytest.raises(ValueError, match="not an image digest"):
        revision_name(SERVICE, "latest", {})
    with pytest.raises(ValueError, match="too long"):
        revision_name("s" * 50, DIGEST, {})
