"""The renderer against the installed Pulumi SDK: what it records comes through the public testing API."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import pulumi
import pulumi_random as random
import pytest

from tools.render import Rendering, render, unwrap_secrets

pytestmark = pytest.mark.unit


def _program() -> dict[str, Any]:
    parent = pulumi.ComponentResource("test:index:Parent", "parent")
    first = random.RandomPassword(
        "first",
        random.RandomPasswordArgs(length=16, keepers={"token": pulumi.Output.secret("s3cret"), "plain": "p"}),
        opts=pulumi.ResourceOptions(parent=parent, protect=True, ignore_changes=["length"]),
    )
    second = random.RandomPassword(
        "second",
        random.RandomPasswordArgs(length=first.length),
        opts=pulumi.ResourceOptions(depends_on=[parent]),
    )
    return {
        "plain": second.length,
        "secret": pulumi.Output.secret(first.result),
        "nested": {"a": [first.length, "x"]},
    }


@pytest.fixture(scope="module")
def rendering() -> Rendering:
    return render("prod", {}, {}, program=_program)


def test_secret_inputs_arrive_unwrapped_with_their_paths(rendering: Rendering) -> None:
    first = rendering.one("random:index/randomPassword:RandomPassword", "first")
    assert first.inputs["keepers"] == {"token": "s3cret", "plain": "p"}
    # The SDK marks the whole property secret when any value inside it is.
    assert first.secret_paths == {"keepers"}


def test_options_the_mocks_api_does_not_pass_are_recorded(rendering: Rendering) -> None:
    parent = rendering.one("test:index:Parent")
    first = rendering.one("random:index/randomPassword:RandomPassword", "first")
    second = rendering.one("random:index/randomPassword:RandomPassword", "second")
    assert first.protect and not second.protect
    assert first.parent == parent.urn
    assert first.ignore_changes == {"length"}
    assert first.urn.endswith("test:index:Parent$random:index/randomPassword:RandomPassword::first")
    # Depending on a component is depending on its children, as the engine is told.
    assert second.dependencies == {first.urn}
    assert not parent.custom and first.custom


def test_outputs_are_recorded_in_export_order_with_their_secrecy(rendering: Rendering) -> None:
    assert list(rendering.outputs) == ["plain", "secret", "nested"]
    assert rendering.outputs["plain"] == 16
    assert rendering.outputs["secret"].startswith("mock-password-")
    assert rendering.outputs["nested"] == {"a": [16, "x"]}
    assert rendering.secret_outputs == {"secret"}


def test_a_failing_program_raises_its_own_error() -> None:
    def broken() -> dict[str, Any]:
        raise ValueError("liftoff:api.minInstances must be at least 0")

    with pytest.raises(ValueError, match=r"liftoff:api\.minInstances"):
        render("prod", {}, {}, program=broken)


def test_unwrap_secrets_opens_nested_envelopes() -> None:
    wrapped = pulumi.runtime.rpc.wrap_rpc_secret
    value = {"a": wrapped({"b": [1, wrapped("c")]}), "d": "e"}
    assert unwrap_secrets(value) == ({"a": {"b": [1, "c"]}, "d": "e"}, {"a", "a.b[1]"})


def open_loops() -> set[int]:
    gc.collect()
    loops = [o for o in gc.get_objects() if isinstance(o, asyncio.AbstractEventLoop)]
    return {id(loop) for loop in loops if not loop.is_closed()}


def test_a_render_leaves_no_event_loop_open() -> None:
    """The mock monitor's per-thread loops close with the render, not in a later test's GC.

    Only the loops the render made count: another test may hold its own open (pytest-asyncio's).
    """
    from tests.stacks.conftest import SECRETS
    from tools.render import stack_config

    before = open_loops()
    render("prod", stack_config("prod"), SECRETS)
    assert open_loops() - before == set()
