"""Check rendered inputs against the provider SDKs' input types, nested properties included.

The mock engine accepts any property name; a real provider rejects, or silently ignores, a
misspelt one. Every provider SDK ships its input types as `*Args` classes whose getters carry
the engine's property names, so each rendered property can be looked up where it is defined.
"""

from __future__ import annotations

import importlib
import sys
import types
import typing
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

# The SDK has no public way to read an *Args class's engine property names; _py_properties is the
# one it uses itself. tests/stacks/test_program.py fails loudly either way if it changes: every
# rendered property must be found, and a misspelt one must not.
from pulumi._types import _py_properties, is_input_type

from components.jobrun import JobRun
from components.ledger import ReleaseLedger
from components.propagation import GrantPropagation
from components.supabase_api import SupabaseProject
from tools.render import Registered

PACKAGES = {
    "gcp": "pulumi_gcp",
    "upstash": "upstash_pulumi",
    "random": "pulumi_random",
    "docker-build": "pulumi_docker_build",
}

# Dynamic resources (pulumi.dynamic, providers in components/) have no SDK: each declares the
# properties its provider reads. Outputs it declares arrive as None inputs.
DYNAMIC: dict[str, frozenset[str]] = {
    cls.TYPE: cls.PROPERTIES for cls in (GrantPropagation, JobRun, ReleaseLedger, SupabaseProject)
}


def args_class(token: str) -> type:
    """The `*Args` class of a resource type token such as `gcp:cloudrunv2/service:Service`."""
    package, module, name = token.split(":")
    base = importlib.import_module(PACKAGES[package])
    submodule = module.split("/")[0]
    owner = base if submodule == "index" else importlib.import_module(f"{base.__name__}.{submodule}")
    cls = getattr(owner, f"{name}Args", None)
    if not isinstance(cls, type):
        raise LookupError(f"no {name}Args for {token}")
    return cls


def _input_types(hint: Any) -> Iterator[type]:
    """The input types a (possibly wrapped: Input, Optional, Sequence, Mapping) hint allows."""
    if isinstance(hint, type) and is_input_type(hint):
        yield hint
        return
    for arg in typing.get_args(hint):
        yield from _input_types(arg)


def _properties(cls: type) -> dict[str, list[type]]:
    """Property name (as the engine sees it) -> the input types its value may be."""
    module = sys.modules[cls.__module__]
    namespace = {**vars(module), **{k: v for k, v in vars(module).items() if isinstance(v, types.ModuleType)}}
    found: dict[str, list[type]] = {}
    for python_name, pulumi_name, prop in _py_properties(cls):
        getter = prop.fget if isinstance(prop, property) else prop
        try:
            hints = typing.get_type_hints(getter, globalns=namespace)
        except NameError:
            hints = {}
        found[pulumi_name] = list(_input_types(hints.get("return")))
        del python_name
    return found


def unknown_properties(resource: Registered) -> list[str]:
    """Paths of the properties in `resource`'s inputs that its SDK does not define."""
    problems: list[str] = []

    def walk(value: Any, cls: type, path: str) -> None:
        if isinstance(value, Sequence) and not isinstance(value, str):
            for index, item in enumerate(value):
                walk(item, cls, f"{path}[{index}]")
            return
        if not isinstance(value, Mapping):
            return
        properties = _properties(cls)
        for key, item in value.items():
            if key not in properties:
                problems.append(f"{path}.{key}" if path else key)
                continue
            for nested in properties[key][:1]:
                walk(item, nested, f"{path}.{key}" if path else key)

    if resource.type in DYNAMIC:
        known = DYNAMIC[resource.type]
        return sorted(k for k, v in resource.inputs.items() if k not in known and v is not None)
    walk(resource.inputs, args_class(resource.type), "")
    return problems
