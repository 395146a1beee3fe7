"""`python -m release.compat --base REF [--head REF-or-tree] [--json]` (`make compat`).

Exit 0: BASE's code works on the schema HEAD's expand migrations make; 3: it does not (the
report names the migration, the failing step and the error); 2: a ref or tree that does not
exist; 1: the gate itself failed.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from release.compat.gate import check
from release.compat.report import EXIT_GATE_FAILED, EXIT_USAGE, CompatReport, GateError, UsageError
from release.compat.trees import ROOT, export, resolve


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m release.compat", description=__doc__)
    parser.add_argument("--base", required=True, help="git ref of the code that must keep working")
    parser.add_argument(
        "--head",
        help="git ref or directory whose migrations are applied (default: the working tree)",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    try:
        report = _run(args.base, args.head)
    except UsageError as exc:
        print(f"compat: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except GateError as exc:
        print(f"compat: the gate failed: {exc}", file=sys.stderr)
        return EXIT_GATE_FAILED
    print(json.dumps(report.to_json(), indent=2) if args.json else report.text())
    return report.exit_code


def _run(base: str, head: str | None) -> CompatReport:
    if head is None:
        return check(base)
    if Path(head).is_dir():
        return check(base, head=Path(head), label=head)
    commit = resolve(ROOT, head)
    with tempfile.TemporaryDirectory(prefix="liftoff-compat-head-") as tmp:
        tree = export(ROOT, commit, Path(tmp))
        return check(base, head=tree, label=f"{head} ({commit[:12]})")


if __name__ == "__main__":
    sys.exit(main())
