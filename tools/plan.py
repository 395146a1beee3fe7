"""Offline plans: a stack's desired state as a stable, reviewable file, and what a change does to it.

    python tools/plan.py render --stack prod [--out .plan/prod.json]
    python tools/plan.py diff --base origin/main [--out plan-diff.md]

`diff` also prices both sides (tools/cost/): the monthly cost before and after, per line.

No credentials, no CLI: the program runs under the mock engine (tools/render.py). Secret
values never reach the file: stack secrets render from placeholders, and every input the
engine marks secret is written as "[secret]". `diff` renders the base ref's tree with this
tool, so a base from before the tool existed still renders.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Mapping
from io import BytesIO
from pathlib import Path
from typing import Any

TOOL = Path(__file__).resolve()
CURRENT = TOOL.parents[1]
STACKS = ("staging", "prod")
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
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def _flatten(value: Any, path: str = "") -> dict[str, Any]:
    if isinstance(value, Mapping) and value:
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{path}.{k}" if path else str(k)))
        return out
    if isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
        out = {}
        for i, v in enumerate(value):
            out.update(_flatten(v, f"{path}[{i}]"))
        return out
    return {path: value}


def diff_plans(base: Mapping[str, Any] | None, head: Mapping[str, Any]) -> dict[str, Any]:
    """Resources added, removed and modified (with each changed property) from base to head."""
    before = {(r["type"], r["name"]): r for r in (base or {}).get("resources", [])}
    after = {(r["type"], r["name"]): r for r in head.get("resources", [])}
    modified: dict[str, list[dict[str, Any]]] = {}
    for key in sorted(before.keys() & after.keys()):
        old = _flatten({"inputs": before[key]["inputs"], "protect": before[key].get("protect", False)})
        new = _flatten({"inputs": after[key]["inputs"], "protect": after[key].get("protect", False)})
        changes = [
            {"property": p, "before": old.get(p), "after": new.get(p)}
            for p in sorted(old.keys() | new.keys())
            if old.get(p) != new.get(p)
        ]
        if changes:
            modified[f"{key[0]}::{key[1]}"] = changes
    return {
        "added": [f"{t}::{n}" for t, n in sorted(after.keys() - before.keys())],
        "removed": [f"{t}::{n}" for t, n in sorted(before.keys() - after.keys())],
        "modified": modified,
        "policy": [v for v in head.get("policy", []) if v["level"] == "mandatory"],
    }


def markdown(
    reports: Mapping[str, Mapping[str, Any]],
    base: str,
    errors: Mapping[str, str],
    costs: Mapping[str, str] | None = None,
) -> str:
    lines = [f"## Offline plan against `{base}`", ""]
    for stack, report in reports.items():
        added, modified, removed = len(report["added"]), len(report["modified"]), len(report["removed"])
        counts = f"{added} to add, {modified} to change, {removed} to remove"
        lines += [f"### {stack}: {counts}", ""]
        if costs and stack in costs:
            lines += [costs[stack], ""]
        if stack in errors:
            lines += [f"The base did not render ({errors[stack]}); every resource counts as added.", ""]
        for key in report["added"]:
            lines.append(f"- `+ {key}`")
        for key in report["removed"]:
            lines.append(f"- `- {key}`")
        for key, changes in report["modified"].items():
            lines.append(f"- `~ {key}`")
            for change in changes[:20]:
                before = json.dumps(change["before"])[:80]
                after = json.dumps(change["after"])[:80]
                lines.append(f"  - `{change['property']}`: {before} → {after}")
            if len(changes) > 20:
                lines.append(f"  - and {len(changes) - 20} more")
        if report["policy"]:
            lines += ["", "**Mandatory policy violations:**"]
            lines += [f"- {v['policy']} on `{v['resource']}`: {v['message']}" for v in report["policy"]]
        if not (report["added"] or report["removed"] or report["modified"] or report["policy"]):
            lines.append("No resource changes.")
        lines.append("")
    return "\n".join(lines)


def cost_change(stack: str, base: Mapping[str, Any] | None, head: Mapping[str, Any], base_root: Path) -> str:
    """The monthly cost before and after, per line (tools/cost/), as Markdown; or why not."""
    if str(CURRENT) not in sys.path:
        sys.path.insert(0, str(CURRENT))
    from tools.cost import diff_markdown, estimate, load_prices, stack_usage

    try:
        prices = load_prices()
        after = estimate(head, stack_usage(stack, CURRENT), prices)
    except ValueError as exc:
        return f"Monthly cost: not estimated ({exc})."
    try:
        before = None if base is None else estimate(base, stack_usage(stack, base_root), prices)
    except ValueError as exc:
        return f"Monthly cost: about ${after.total:,.2f}; the base's was not estimated ({exc})."
    notes = (
        f"Offline estimate in USD; both sides priced with this tree's tools/prices.yaml"
        f" (checked {after.prices_checked}). {' '.join(after.notes)}"
    )
    return f"{diff_markdown(before, after)}\n\n<sub>{notes}</sub>"


def _render_in_subprocess(stack: str, root: Path) -> tuple[dict[str, Any] | None, str | None]:
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        result = subprocess.run(  # noqa: S603 - this very tool, with our arguments
            [sys.executable, str(TOOL), "render", "--stack", stack, "--root", str(root), "--out", out.name],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            last = (result.stderr.strip().splitlines() or ["unknown error"])[-1]
            return None, last
        document: dict[str, Any] = json.loads(Path(out.name).read_text())
        return document, None


def _export_tree(ref: str, into: Path) -> None:
    archive = subprocess.run(  # noqa: S603
        ["git", "archive", "--format=tar", ref],  # noqa: S607 - git from PATH, as for every developer
        cwd=CURRENT,
        capture_output=True,
        check=False,
    )
    if archive.returncode != 0:
        raise SystemExit(f"error: cannot read git ref {ref!r}: {archive.stderr.decode().strip()}")
    with tarfile.open(fileobj=BytesIO(archive.stdout)) as tar:
        tar.extractall(into, filter="data")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="tools/plan.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    render_cmd = commands.add_parser("render", help="write one stack's plan")
    render_cmd.add_argument("--stack", required=True, choices=STACKS)
    render_cmd.add_argument("--root", type=Path, default=CURRENT, help="the tree whose program to render")
    render_cmd.add_argument("--out", type=Path, help="file to write (default: stdout)")
    diff_cmd = commands.add_parser("diff", help="compare every stack's plan with a git ref's")
    diff_cmd.add_argument("--base", required=True, help="git ref to compare with, e.g. origin/main or HEAD~1")
    diff_cmd.add_argument("--out", type=Path, help="also write the Markdown report here")
    args = parser.parse_args(argv)

    if args.command == "render":
        try:
            document = render_plan(args.stack, args.root.resolve())
        except Exception as exc:  # noqa: BLE001 - reported, with its type, to the caller
            print(f"error: {type(exc).__name__}: {exc}".replace("\n", " "), file=sys.stderr)
            return 1
        text = dumps(document)
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(text)
            print(f"wrote {args.out} ({len(document['resources'])} resources)", file=sys.stderr)
        else:
            sys.stdout.write(text)
        return 0

    reports: dict[str, dict[str, Any]] = {}
    errors: dict[str, str] = {}
    costs: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="liftoff-plan-base-") as tmp:
        base_root = Path(tmp)
        _export_tree(args.base, base_root)
        for stack in STACKS:
            head, head_error = _render_in_subprocess(stack, CURRENT)
            if head is None:
                print(f"error: {stack} does not render: {head_error}", file=sys.stderr)
                return 1
            base, base_error = _render_in_subprocess(stack, base_root)
            if base_error is not None:
                errors[stack] = base_error
            reports[stack] = diff_plans(base, head)
            costs[stack] = cost_change(stack, base, head, base_root)
    text = markdown(reports, args.base, errors, costs)
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
