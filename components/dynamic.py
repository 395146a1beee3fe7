"""The base of Liftoff's dynamic resources: pulumi.dynamic.Resource, minus a pickler that deepens.

`pulumi.dynamic.dynamic.serialize_provider` (pulumi 3.272) sorts dictionaries by wrapping
`pickle._Pickler._batch_setitems` in a new closure on every call and never puts the original back,
so each provider serialized in a process adds a frame to every dictionary pickled after it. One
`pulumi up` serializes a handful; a process that runs many (the release controller's inline
programs, a test session) ends in "RecursionError: maximum recursion depth exceeded", as in
https://github.com/pulumi/pulumi/issues/17803. Putting the standard library's method back after
each serialization keeps the wrapping one level deep, which is what the SDK means to do.
"""

from __future__ import annotations

import pickle
from typing import Any

from pulumi import ResourceOptions
from pulumi.dynamic import Resource, ResourceProvider

_STDLIB_QUALNAME = "_Pickler._batch_setitems"


def _stdlib_batch_setitems() -> Any | None:
    """The standard library's `_batch_setitems` under however many wrappers it wears, or None
    if the SDK wrapped it some other way (then it is left alone)."""
    method = pickle._Pickler._batch_setitems  # type: ignore[attr-defined]
    while getattr(method, "__qualname__", None) != _STDLIB_QUALNAME:
        inner = [cell.cell_contents for cell in getattr(method, "__closure__", None) or ()]
        wrapped = [c for c in inner if callable(c)]
        if len(wrapped) != 1:
            return None
        method = wrapped[0]
    return method


def unwrap_pickler() -> None:
    """Undo the wrapping a provider's serialization left on pickle's dictionary writer."""
    original = _stdlib_batch_setitems()
    if original is not None:
        pickle._Pickler._batch_setitems = original  # type: ignore[attr-defined]


class DynamicResource(Resource):
    """A dynamic resource whose registration leaves pickle as it found it."""

    def __init__(
        self, provider: ResourceProvider, name: str, props: Any, opts: ResourceOptions | None = None
    ) -> None:
        try:
            super().__init__(provider, name, props, opts)
        finally:
            unwrap_pickler()
