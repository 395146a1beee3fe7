"""The published OpenAPI document, made to state exactly what the validators enforce."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi


def _exact_key_constraints(node: Any) -> None:
    # Pydantic renders dict[ConstrainedStr, V] as patternProperties, under which JSON Schema
    # still admits keys that miss the pattern. The validator rejects them, so say so.
    if isinstance(node, dict):
        pattern_props = node.get("patternProperties")
        if isinstance(pattern_props, dict) and len(pattern_props) == 1 and "additionalProperties" not in node:
            (pattern, value_schema), *_ = pattern_props.items()
            del node["patternProperties"]
            node["propertyNames"] = {"pattern": pattern}
            node["additionalProperties"] = value_schema
        for child in node.values():
            _exact_key_constraints(child)
    elif isinstance(node, list):
        for child in node:
            _exact_key_constraints(child)


def install_openapi(app: FastAPI) -> None:
    """Replace app.openapi with a cached generator of the corrected document."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(
                title=app.title,
                version=app.version,
                summary=app.summary,
                description=app.description,
                routes=app.routes,
            )
            _exact_key_constraints(document)
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
