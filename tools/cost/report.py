"""The estimate as a terminal table, Markdown, JSON, and the Markdown of a change's cost."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from typing import Any

from stacks.settings import NAMESPACE, USAGE_KEYS
from tools.cost.estimate import IDLE_USAGE
from tools.cost.model import Estimate

IDLE_ROW = "no requests, jobs or releases"


def money(usd: float | None, signed: bool = False) -> str:
    if usd is None:
        return "n/a"
    if signed and round(usd, 2) == 0:
        return "±0.00"
    return f"{usd:+,.2f}" if signed else f"{usd:,.2f}"


def to_json(e: Estimate) -> dict[str, Any]:
    return {
        "stack": e.stack,
        "currency": "USD",
        "pricesChecked": e.prices_checked,
        "pricesVersion": e.prices_version,
        "freeTiers": e.free_tiers,
        "total": round(e.total, 2),
        "idleTotal": round(e.idle_total, 2),
        "lines": [
            {
                "key": line.key,
                "service": line.service,
                "item": line.item,
                "detail": line.detail,
                "usd": None if line.usd is None else round(line.usd, 2),
                "charges": [
                    {"price": c.price, "quantity": c.quantity, "billable": c.billable, "unitUsd": c.unit_usd}
                    for c in line.charges
                ],
                "notes": list(line.notes),
            }
            for line in e.lines
        ],
        "unpriced": [line.key for line in e.unpriced],
        "usage": {key: getattr(e.usage, name) for key, (name, _, _) in USAGE_KEYS.items()},
        "idleUsage": {key: 0 for key, (name, _, _) in USAGE_KEYS.items() if name in IDLE_USAGE},
        "idleLines": [
            {"key": line.key, "usd": None if line.usd is None else round(line.usd, 2)} for line in e.idle
        ],
        "notes": list(e.notes),
    }


def _footer(e: Estimate) -> list[str]:
    out = list(e.notes)
    if e.unpriced:
        out.append(
            "Not in the total (no confirmed price in tools/prices.yaml): "
            + ", ".join(line.item for line in e.unpriced)
            + "."
        )
    out += sorted({note for line in e.lines for note in line.notes})
    return out


def table(e: Estimate, width: int = 48) -> str:
    """For a terminal: one row a line, the quantity wrapped to `width` columns."""
    header = ("Service", "Line", "Quantity", "USD/month")
    rows = [(line.service, line.item, line.detail, money(line.usd)) for line in e.lines]
    totals = [("Total", "", "", money(e.total)), ("Idle month", IDLE_ROW, "", money(e.idle_total))]
    widths = [max(len(row[i]) for row in [header, *rows, *totals]) for i in (0, 1)]
    widths += [width, max(len(row[3]) for row in [header, *rows, *totals])]

    def fmt(row: Sequence[str]) -> list[str]:
        wrapped = textwrap.wrap(row[2], width) or [""]
        first = [
            row[0].ljust(widths[0]),
            row[1].ljust(widths[1]),
            wrapped[0].ljust(width),
            row[3].rjust(widths[3]),
        ]
        rest = [" " * (widths[0] + widths[1] + 4) + more for more in wrapped[1:]]
        return ["  ".join(first).rstrip(), *rest]

    rule = "-" * (sum(widths) + 6)
    out = [f"Monthly estimate for {e.stack} (USD, prices checked {e.prices_checked})", *fmt(header), rule]
    for row in rows:
        out += fmt(row)
    out += [rule, *(text for row in totals for text in fmt(row)), ""]
    return "\n".join(out + [f"- {note}" for note in _footer(e)]) + "\n"


def markdown(e: Estimate) -> str:
    out = [
        f"### {e.stack}: about ${money(e.total)} a month (${money(e.idle_total)} idle)",
        "",
        "| Service | Line | Quantity | USD/month |",
        "| --- | --- | --- | ---: |",
        *(f"| {line.service} | {line.item} | {line.detail} | {money(line.usd)} |" for line in e.lines),
        f"| **Total** | | | **{money(e.total)}** |",
        f"| **Idle month** | {IDLE_ROW} | | **{money(e.idle_total)}** |",
        "",
        *(f"- {note}" for note in _footer(e)),
    ]
    return "\n".join(out) + "\n"


def diff_markdown(before: Estimate | None, after: Estimate) -> str:
    """Monthly cost before and after, the lines whose cost changed, and the usage assumptions that did."""
    if before is None:
        return f"Monthly cost: about ${money(after.total)} (the base did not render, so no comparison)."
    old = {line.key: line for line in before.lines}
    new = {line.key: line for line in after.lines}
    rows = []
    for key in [*old, *(k for k in new if k not in old)]:
        a, b = old.get(key), new.get(key)
        usd_a, usd_b = (a.usd if a else 0.0), (b.usd if b else 0.0)
        if money(usd_a) == money(usd_b):
            continue
        line = b or a
        if line is None:
            continue
        delta = None if usd_a is None or usd_b is None else usd_b - usd_a
        cells = (line.service, line.item, money(usd_a), money(usd_b), money(delta, signed=True))
        rows.append("| " + " | ".join(cells) + " |")
    usage = [
        f"`{key}` {getattr(before.usage, name):,} → {getattr(after.usage, name):,}"
        for key, (name, _, _) in USAGE_KEYS.items()
        if getattr(before.usage, name) != getattr(after.usage, name)
    ]
    if not rows:
        return f"Monthly cost unchanged: about ${money(after.total)}."
    out = [
        f"Monthly cost: ${money(before.total)} → ${money(after.total)}"
        f" (**{money(after.total - before.total, signed=True)}** USD)",
        "",
        "| Service | Line | Before | After | Change |",
        "| --- | --- | ---: | ---: | ---: |",
        *rows,
    ]
    if money(before.idle_total) != money(after.idle_total):
        out += ["", f"Idle month: ${money(before.idle_total)} → ${money(after.idle_total)}."]
    if usage:
        out += ["", f"Usage assumptions changed (`{NAMESPACE}:usage`): " + "; ".join(usage) + "."]
    return "\n".join(out)
