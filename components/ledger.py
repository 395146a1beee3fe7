"""ReleaseLedger: the release history, kept in the stack's state as a resource of its own.

Which revisions shipped, took traffic, failed or were rolled back must outlive the run that
learnt it, and must be read back before the next release picks a revision to pin. The stack's
state is the one store every release already reads and writes under the stack's lock, so the
ledger lives there: a dynamic resource whose create and update make no call at all and return
their inputs as outputs.

The entries arrive as JSON text (a list of objects); what they mean is the release tooling's
business, not this component's.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

import pulumi
from pulumi.dynamic import (
    CheckFailure,
    CheckResult,
    CreateResult,
    DiffResult,
    ReadResult,
    ResourceProvider,
    UpdateResult,
)

from components.dynamic import DynamicResource

EMPTY = "[]"


class LedgerError(ValueError):
    """Entries that are not a JSON list of objects."""


def check_entries(entries: str) -> None:
    """Raise LedgerError unless `entries` is JSON text of a list of objects."""
    try:
        parsed = json.loads(entries)
    except (TypeError, ValueError) as error:
        raise LedgerError(f"entries: not JSON text: {error}") from error
    if not isinstance(parsed, list) or not all(isinstance(item, dict) for item in parsed):
        raise LedgerError(f"entries: must be a JSON list of objects, got {entries[:80]!r}")


class ReleaseLedgerProvider(ResourceProvider):
    """State only: nothing outside the stack's state is created, changed or deleted."""

    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        try:
            check_entries(news.get("entries", EMPTY))
        except LedgerError as error:
            return CheckResult(news, [CheckFailure("entries", str(error))])
        return CheckResult(news, [])

    def create(self, props: dict[str, Any]) -> CreateResult:
        return CreateResult(id_="release-ledger", outs=dict(props))

    def update(self, _id: str, _olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        return UpdateResult(outs=dict(news))

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        # Compared as data: the same ledger written with other spacing is no change.
        changed = _parsed(olds.get("entries")) != _parsed(news.get("entries"))
        return DiffResult(changes=changed, replaces=[], delete_before_replace=False)

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        return ReadResult(id_=id_, outs=props)

    def delete(self, _id: str, _props: dict[str, Any]) -> None:
        return None


def _parsed(entries: object) -> object:
    try:
        return json.loads(str(entries)) if entries is not None else []
    except ValueError:
        return entries


class ReleaseLedger(DynamicResource, module="liftoff", name="ReleaseLedger"):
    """The stack's release ledger, as JSON text in its state."""

    TYPE: ClassVar[str] = "pulumi-python:dynamic/liftoff:ReleaseLedger"
    # What the provider reads and writes: a dynamic resource has no schema to check them against.
    PROPERTIES: ClassVar[frozenset[str]] = frozenset({"entries"})

    entries: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        entries: pulumi.Input[str] = EMPTY,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        if isinstance(entries, str):
            check_entries(entries)  # plain text is checked before anything is registered
        super().__init__(ReleaseLedgerProvider(), name, {"entries": entries}, opts)
