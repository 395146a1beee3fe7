"""What a stack costs a month, estimated offline from its rendered plan.

    python -m tools.cost --stack prod [--format table|markdown|json] [--free-tiers] [--plan FILE]

The plan is the one `tools/plan.py render` writes (rendered here unless --plan names one); the
prices come from tools/prices.yaml, each with its source and the day it was read; the usage
(requests, jobs, releases a month) from the stack file's `liftoff:usage`. No credentials.
Beside the total at that usage it prices an idle month: the same plan with no requests, jobs,
busy periods or releases.

Free tiers belong to a billing account, not to a stack: they are left out unless --free-tiers
asks to apply them to this stack as if it were alone on its account.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tools.cost.estimate import estimate, stack_usage
from tools.cost.prices import ROOT, CostError, load_prices
from tools.cost.report import markdown, table, to_json


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.cost",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--stack", required=True, choices=("staging", "prod"))
    parser.add_argument("--plan", type=Path, help="a plan file from `make plan` (default: render it now)")
    parser.add_argument("--format", choices=("table", "markdown", "json"), default="table")
    parser.add_argument(
        "--json", action="store_const", const="json", dest="format", help="same as --format json"
    )
    parser.add_argument(
        "--free-tiers", action="store_true", help="apply the billing-account free tiers to this stack alone"
    )
    args = parser.parse_args(argv)
    try:
        if args.plan:
            plan = json.loads(args.plan.read_text())
        else:
            from tools.plan_document import render_plan

            plan = render_plan(args.stack, ROOT)
        result = estimate(plan, stack_usage(args.stack), load_prices(), free_tiers=args.free_tiers)
    except (CostError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    output = {"table": table, "markdown": markdown}.get(args.format)
    sys.stdout.write(
        output(result) if output else json.dumps(to_json(result), indent=2, ensure_ascii=False) + "\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
