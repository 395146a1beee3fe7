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
    SUPERSEDED = "superseded"  # left unfinished (paused, stopped), sent back by the next release


BAD = frozenset({Outcome.FAILED, Outcome.ROLLED_BACK})


@dataclass(frozen=True, slots=True)
class Release:
    """One release: the API service's revision and the worker pool's revision shipped together."""

    api: str
    worker: str

    @property
    def revisions(self) -> tuple[str, str]:
        return (self.api, self.worker)

    def to_json(self) -> dict[str, str]:
        return {"api": self.api, "worker": self.worker}


@dataclass(frozen=True, slots=True)
class Entry:
    """The latest word on one release."""

    release: Release
    outcome: Outcome
    at: str  # ISO 8601, UTC
    reason: str = ""
    # The commit the release's program was shipped from: where a rollback's program can run.
    commit: str = ""
    # Why the schema no longer supports this release's code ("": it does): a contract migration
    # that ran after it, which a rollback to it would not undo.
    unsupported: str = ""

    def to_json(self) -> dict[str, Any]:
        found = {
            **self.release.to_json(),
            "outcome": self.outcome.value,
            "at": self.at,
            "reason": self.reason,
            "commit": self.commit,
        }
        if self.unsupported:
            found["unsupported"] = self.unsupported
        return found

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Entry:
        return cls(
            release=Release(api=str(raw["api"]), worker=str(raw["worker"])),
            outcome=Outcome(str(raw["outcome"])),
            at=str(raw.get("at", "")),
            reason=str(raw.get("reason", "")),
            commit=str(raw.get("commit", "")),
            unsupported=str(raw.get("unsupported", "")),
        )


@dataclass(frozen=True, slots=True)
class Ledger:
    """Releases, oldest first, one entry per release (its latest outcome)."""

    entries: tuple[Entry, ...] = ()

    def record(
        self, release: Release, outcome: Outcome, at: str, reason: str = "", commit: str = ""
    ) -> Ledger:
        """The ledger with `release` moved to the end under its new outcome (its commit kept)."""
        earlier = next((e for e in self.entries if e.release == release), None)
        commit = commit or (earlier.commit if earlier else "")
        unsupported = earlier.unsupported if earlier else ""
        kept = [e for e in self.entries if e.release != release]
        return Ledger((*kept, Entry(release, outcome, at, reason, commit, unsupported))[-KEEP:])

    def unsupport(self, lost: Iterable[Entry], why: str) -> Ledger:
        """The ledger with the releases of `lost` marked as no longer supported by the schema, and
        why: every entry of the same commit too (the code is the commit's), or the same release
        when no commit is recorded."""
        found = list(lost)
        commits = {e.commit for e in found if e.commit}
        releases = {e.release for e in found if not e.commit}

        def hit(entry: Entry) -> bool:
            return (entry.commit in commits) if entry.commit else entry.release in releases

        return Ledger(
            tuple(replace(e, unsupported=why) if hit(e) and not e.unsupported else e for e in self.entries)
        )

    def unsupported(self, release: Release) -> str:
        """Why the current schema no longer supports `release` ("" when it does)."""
        return next((e.unsupported for e in self.entries if e.release == release), "")

    def rollback_targets(self) -> list[Entry]:
        """The promoted releases a rollback could return to, newest first: those the schema
        still supports, one per commit (the code is the commit's: one check covers them)."""
        seen: set[str] = set()
        targets = []
        for entry in reversed(self.entries):
            if entry.outcome is not Outcome.PROMOTED or entry.unsupported:
                continue
            key = entry.commit or entry.release.api
            if key not in seen:
                seen.add(key)
                targets.append(entry)
        return targets

    @property
    def floor(self) -> Entry | None:
        """The oldest promoted release the current schema still supports."""
        targets = self.rollback_targets()
        return targets[-1] if targets else None

    def outcome(self, release: Release) -> Outcome | None:
        return next((e.outcome for e in self.entries if e.release == release), None)

    def entry_for_api(self, revision: str) -> Entry | None:
        return next((e for e in reversed(self.entries) if e.release.api == revision), None)

    def release_serving(self, api: str, workers: Iterable[str]) -> Release | None:
        """The newest recorded release with this API revision and one of these worker revisions."""
        running = set(workers)
        for entry in reversed(self.entries):
            if entry.release.api == api and entry.release.worker in running:
                return entry.release
        return None

    def bad_revisions(self) -> frozenset[str]:
        """Every revision of a release that failed or was rolled back, but for those a promoted
        release also runs: an API-only release shares its worker revision with the stable one,
        and that revision stays good when the release fails.
        """
        bad = {name for e in self.entries if e.outcome in BAD for name in (e.release.api, e.release.worker)}
        good = {
            name
            for e in self.entries
            if e.outcome is Outcome.PROMOTED
            for name in (e.release.api, e.release.worker)
        }
        return frozenset(bad - good)

    def is_bad(self, release: Release) -> bool:
        bad = self.bad_revisions()
        return release.api in bad or release.worker in bad

    @property
    def newest(self) -> Entry | None:
        """The release recorded last, whatever its outcome."""
        return self.entries[-1] if self.entries else None

    def commit_of(self, release: Release) -> str:
        """The commit `release` was shipped from, "" when not recorded."""
        return next((e.commit for e in self.entries if e.release == release), "")

    def in_progress(self) -> Entry | None:
        """The release that was shipped or in canary when the last run stopped, if any."""
        last = self.newest
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
