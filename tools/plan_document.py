"""The plan document: one stack's desired state rendered offline as a stable, reviewable file.

The program runs under the mock engine (tools/render.py), with no credentials and no CLI. Secret
values never reach the document: stack secrets render from placeholders, and every input the
engine marks secret is written as "[secret]". `tools/plan.py` writes and compares these
documents; `tools/cost/` prices them.

Only the standard library is imported here at load time: a base tree's program must be the first
`stacks` and `components` this process imports (`render_plan`).
"""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

CURRENT = Path(__file__).resolve().parents[1]
REDACTED = "[secret]"
# Secret config a stack may need to render; real values live encrypted with the stack.
PLACEHOLDERS = {
    "liftoff:openaiApiKey": "placeholder-openai-api-key",
    "liftoff:sentryDsn": "placeholder-sentry-dsn",
    "liftoff:supabaseJwtSecret": "placeholder-supabase-jwt-secret",
    "liftoff:supabaseDbPassword": "placeholder-supabase-db-password",
    "supabase:accessToken": "placeholder-supabase-access-token",
}


def redact(value: Any, secret_paths: frozenset[str], path: str = "", root: str = "") -> Any:
    """`value` with every secret path, and every placeholder secret, replaced by [secret], and
    paths inside the tree written relative to it (so two checkouts compare equal)."""
    if path in secret_paths:
        return REDACTED
    if isinstance(value, Mapping):
        return {
            k: redact(v, secret_paths, f"{path}.{k}" if path else str(k), root)
            for k, v in sorted(value.items())
        }
    if isinstance(value, list):
        return [redact(v, secret_paths, f"{path}[{i}]", root) for i, v in enumerate(value)]
    if isinstance(value, str) and any(p in value for p in PLACEHOLDERS.values()):
        return REDACTED
    if isinstance(value, str) and root and (value == root or value.startswith(root + "/")):
        return "." + value[len(root) :]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def render_plan(stack: str, root: Path) -> dict[str, Any]:
    """The plan document of `stack` as declared by the tree at `root`."""
    # The program, its config and its components come from `root`; the renderer from here, so
    # that a base tree from before it existed renders too.
    sys.path[:] = [str(root), *[p for p in sys.path if Path(p or ".").resolve() not in (CURRENT, root)]]
    spec = importlib.util.spec_from_file_location("liftoff_plan_render", CURRENT / "tools" / "render.py")
    if spec is None or spec.loader is None:
        raise ImportError("tools/render.py is missing")
    renderer = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = renderer
    spec.loader.exec_module(renderer)
    render, secret_keys, stack_config = renderer.render, renderer.secret_keys, renderer.stack_config

    config = stack_config(stack, root)
    wanted = set(secret_keys(stack, root)) | {"supabase:accessToken"}
    if (
        "liftoff:app" not in config
        or (config.get("liftoff:app") or {}).get("aiProvider", "openai") == "openai"
    ):
        wanted.add("liftoff:openaiApiKey")
    if (config.get("liftoff:supabase") or {}).get("mode") == "adopt":
        wanted.add("liftoff:supabaseDbPassword")
    secrets = {k: PLACEHOLDERS.get(k, f"placeholder-{k}") for k in sorted(wanted)}
    rendering = render(stack, config, secrets)
    violations = _policy_results(rendering) if root == CURRENT else []
    resources = sorted(
        (
            {
                "type": r.type,
                "name": r.name,
                **({"protect": True} if r.protect else {}),
                # Inputs the engine keeps as recorded (release-managed traffic): not what will serve.
                **({"ignoreChanges": sorted(r.ignore_changes)} if r.ignore_changes else {}),
                "inputs": redact(r.inputs, r.secret_paths, root=str(root)),
            }
            for r in rendering.resources
        ),
        key=lambda r: (r["type"], r["name"]),
    )
    outputs = {
        k: REDACTED if k in rendering.secret_outputs else redact(v, frozenset())
        for k, v in sorted(rendering.outputs.items())
    }
    return {"stack": stack, "resources": resources, "outputs": outputs, "policy": violations}


def _policy_results(rendering: Any) -> list[dict[str, str]]:
    from tools.policy_check import evaluate

    return [
        {
            "policy": v.policy,
            "level": "mandatory" if v.mandatory else "advisory",
            "resource": v.resource,
            "message": v.message,
        }
        for v in evaluate(rendering)
    ]


def dumps(document: Mapping[str, Any]) -> str:
    """The document as the plan file holds it: sorted keys, two-space indent, one final newline."""
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
