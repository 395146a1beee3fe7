"""Pulumi's mock engine for one component at a time, every registration recorded.

The pattern of mitodl/ol-infrastructure's component tests (tests/ol_infrastructure/components/gcp/
conftest.py): fresh mocks per test through `pulumi.runtime.set_mocks`, the component declared
inside `pulumi.runtime.test`. The recording mocks are the stack renderer's (tools/render.py), so
a component's children get the same stand-ins for computed outputs as in a whole-stack render.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pulumi
import pytest
from pulumi.runtime import MockResourceArgs

from tools.render import (
    RecordingMocks,
    RecordingMonitor,
    Registered,
    Rendering,
    mock_engine_loop,
    record_exports,
    run_under_mocks,
)

PROJECT = "liftoff"
STACK = "test"
Program = Callable[[], Mapping[str, Any]]


class Declared(Rendering):
    """A rendering that also answers which resources a component registered as its children."""

    def children(self, component: str) -> list[Registered]:
        """The resources whose parent is the one `component` (a type token) registered."""
        parent = self.one(component)
        return [r for r in self.resources if r.parent == parent.urn]

    def child_names(self, component: str) -> set[str]:
        return {r.name for r in self.children(component)}


class ComponentMocks(RecordingMocks):
    """The recording mocks, with provider outputs a test may set by type (over the stand-ins)."""

    def __init__(self) -> None:
        super().__init__()
        self.provider_outputs: dict[str, dict[str, Any]] = {}

    def new_resource(self, args: MockResourceArgs) -> tuple[str | None, dict[Any, Any]]:
        resource_id, state = super().new_resource(args)
        return resource_id, {**state, **self.provider_outputs.get(args.typ, {})}


@pytest.fixture
def mocks() -> Iterator[ComponentMocks]:
    """Fresh mocks for the test, with no stack config left over from another test."""
    with mock_engine_loop():
        pulumi.runtime.set_all_config({}, secret_keys=[])
        recording = ComponentMocks()
        pulumi.runtime.set_mocks(
            recording, project=PROJECT, stack=STACK, preview=False, monitor=RecordingMonitor(recording)
        )
        yield recording


Declare = Callable[[Program], Declared]


@pytest.fixture
def declare(mocks: ComponentMocks) -> Declare:
    """Runs a program that declares components and returns outputs by name.

    Every output is resolved (and noted if secret) and every registration finished when the
    rendering is returned: `pulumi.runtime.test` waits for the engine's outstanding calls.
    """

    def run(program: Program) -> Declared:
        rendering = Declared(stack=STACK, resources=mocks.resources)
        run_under_mocks(lambda: record_exports(program(), rendering))()
        return rendering

    return run
