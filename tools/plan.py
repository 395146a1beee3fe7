"""Offline plans: a stack's desired state as a stable, reviewable file, and what a change does to it.

    python tools/plan.py render --stack prod [--out .plan/prod.json]
    python tools/plan.py diff --base origin/main [--out plan-diff.md]

`diff` also prices both sides (tools/cost/): the monthly cost before and after, per line.

No credentials, no CLI: each side is a plan document (tools/plan_document.py), secrets
redacted. `diff` renders the base ref's tree with this tool, so a base from before the tool
existed still renders.
"""

from __future__ import annotations

import argparse
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
STACKS = ("staging", "prod")

# Run as a script (make plan, the pull request's plan diff), the project root must be importable.
sys.path.insert(0, str(TOOL.parents[1]))

from tools.plan_document import CURRENT, dumps, render_plan  # noqa: E402


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
