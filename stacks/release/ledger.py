"""The release ledger: which revisions shipped, which were promoted, which failed or were rolled back.

The ledger is what keeps a later release from pinning traffic to a revision that failed: it
lives in the stack's state (components/ledger.py) and is read back before every release.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

# Enough history for any rollback an on-call engineer would want; older entries are dropped.
KEEP = 50


class Outcome(StrEnum):
    """Where a release stands."""

    SHIPPED = "shipped"  # created at 0 %, not yet smoke-tested
    CANARY = "canary"  # taking a share of the traffic behind the gates
    PROMOTED = "promoted"  # took all traffic and passed every gate
    FAILED = "failed"  # failed its smoke test or a gate; never took more than a step's share
    ROLLED_BACK = "rolled-back"  # was serving and was sent away from


BAD = frozenset({Outcome.FAILED, Outcome.ROLLED_BACK})


@dataclass(frozen=True, slots=True)
class Release:
    """One release: the API service's revision and the worker pool's revision shipped together."""

    api: str
    worker: str

    def to_json(self) -> dict[str, str]:
        return {"api": self.api, "worker": self.worker}


@dataclass(frozen=True, slots=True)
class Entry:
    """The latest word on one release."""

    release: Release
    outcome: Outcome
    at: str  # ISO 8601, UTC
    reason: str = ""

    def to_json(self) -> dict[str, Any]:
        return {**self.release.to_json(), "outcome": self.outcome.value, "at": self.at, "reason": self.reason}

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Entry:
        return cls(
            release=Release(api=str(raw["api"]), worker=str(raw["worker"])),
            outcome=Outcome(str(raw["outcome"])),
            at=str(raw.get("at", "")),
            reason=str(raw.get("reason", "")),
        )


@dataclass(frozen=True, slots=True)
class Ledger:
    """Releases, oldest first, one entry per release (its latest outcome)."""

    entries: tuple[Entry, ...] = ()

    def record(self, release: Release, outcome: Outcome, at: str, reason: str = "") -> Ledger:
        """The ledger with `release` moved to the end under its new outcome."""
        kept = [e for e in self.entries if e.release != release]
        return Ledger((*kept, Entry(release, outcome, at, reason))[-KEEP:])

    def outcome(self, release: Release) -> Outcome | None:
        return next((e.outcome for e in self.entries if e.release == release), None)

    def entry_for_api(self, revision: str) -> Entry | None:
        return next((e for e in reversed(self.entries) if e.release.api == revision), None)

    def bad_revisions(self) -> frozenset[str]:
        """Every API and worker revision of a release that failed or was rolled back."""
        return frozenset(
            name for e in self.entries if e.outcome in BAD for name in (e.release.api, e.release.worker)
        )

    def is_bad(self, release: Release) -> bool:
        bad = self.bad_revisions()
        return release.api in bad or release.worker in bad

    def in_progress(self) -> Entry | None:
        """The release that was shipped or in canary when the last run stopped, if any."""
        last = self.entries[-1] if self.entries else None
        return last if last is not None and last.outcome in (Outcome.SHIPPED, Outcome.CANARY) else None

    def last_good(self, excluding: Iterable[Release] = ()) -> Release | None:
        """The most recently promoted release that is not excluded and never went bad since."""
        skip = set(excluding)
        for entry in reversed(self.entries):
            if entry.outcome is Outcome.PROMOTED and entry.release not in skip:
                return entry.release
        return None

    def to_json(self) -> list[dict[str, Any]]:
        return [e.to_json() for e in self.entries]

    def dumps(self) -> str:
        return json.dumps(self.to_json(), sort_keys=True)

    @classmethod
    def from_json(cls, raw: object) -> Ledger:
        """A ledger from a stack output (a list of entries, or its JSON text); None is empty."""
        if raw is None or raw == "":
            return cls()
        if isinstance(raw, str):
            raw = json.loads(raw)
        if not isinstance(raw, list):
            raise ValueError(f"a release ledger is a list of entries, got {type(raw).__name__}")
        return cls(tuple(Entry.from_json(item) for item in raw))

    def replace_reason(self, release: Release, reason: str) -> Ledger:
        return Ledger(tuple(replace(e, reason=reason) if e.release == release else e for e in self.entries))
