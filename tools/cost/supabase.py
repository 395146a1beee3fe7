"""Supabase: a project's plan fee and compute hours, less the plan's compute credits, and its disk."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from stacks.settings import HOURS_PER_MONTH
from tools.cost.model import Context, Line

# A new Supabase project's compute size when the plan names none (Free runs on Nano, paid plans
# start on Micro): https://supabase.com/docs/guides/platform/manage-your-usage/compute
DEFAULT_COMPUTE = {"free": "nano", "pro": "micro"}


def supabase_projects(resources: list[Mapping[str, Any]], ctx: Context) -> list[Line]:
    """The plan's fee, the compute size's hours less the plan's compute credits, and extra disk."""
    lines = []
    for r in resources:
        inputs, name = r["inputs"], r["inputs"]["name"]
        plan = ctx.usage.supabase_plan
        declared = inputs.get("instance_size") or inputs.get("instanceSize")
        # Supabase's API also spells sizes with a "ci_" prefix (ci_micro); the price file does not.
        size = str(declared or DEFAULT_COMPUTE.get(plan, "micro")).removeprefix("ci_")
        compute = ctx.charge(f"supabase.compute.{size}", HOURS_PER_MONTH)
        charges = [ctx.charge(f"supabase.plan.{plan}", 1), compute]
        credit = ctx.book.price("supabase.compute.credit")
        if plan != "free" and credit.usd and compute.usd:
            charges.append(ctx.charge("supabase.compute.credit", -min(1.0, compute.usd / credit.usd)))
        charges.append(ctx.charge("supabase.disk", ctx.usage.database_gb))
        lines.append(
            Line(
                f"supabase/{name}",
                "Supabase",
                f"Project {name}: {plan} plan, {size} compute",
                f"plan fee + {HOURS_PER_MONTH:g} h of {size}"
                + (" − compute credits" if plan != "free" else "")
                + f"; {ctx.usage.database_gb} GB of data",
                tuple(charges),
                ("The plan's fee and credits are per organization: one organization per stack is assumed.",),
            )
        )
    return lines
