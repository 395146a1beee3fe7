"""Charges, lines and estimates; the context an estimator reads; an instance's shape from the plan."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from stacks.settings import UsageSettings, seconds_per_month
from tools.cost.prices import CostError, PriceBook


@dataclass(frozen=True)
class Charge:
    """A quantity of one price; `billable` is what is left after what the price includes."""

    price: str
    quantity: float
    billable: float
    unit_usd: float | None

    @property
    def usd(self) -> float | None:
        return None if self.unit_usd is None else self.billable * self.unit_usd


@dataclass(frozen=True)
class Line:
    """One line of the estimate. `key` names it the same way in every plan, for diffs."""

    key: str
    service: str
    item: str
    detail: str
    charges: tuple[Charge, ...]
    notes: tuple[str, ...] = ()

    @property
    def usd(self) -> float | None:
        amounts = [c.usd for c in self.charges]
        return None if any(a is None for a in amounts) else sum(a for a in amounts if a is not None)


@dataclass(frozen=True)
class Estimate:
    """A stack's monthly estimate, line by line."""

    stack: str
    lines: tuple[Line, ...]
    free_tiers: bool
    prices_checked: str
    prices_version: int
    usage: UsageSettings
    notes: tuple[str, ...] = field(default=())
    # The same stack priced for an idle month (IDLE_USAGE, in estimate.py): what it costs with no work at all.
    idle: tuple[Line, ...] = field(default=())

    @property
    def total(self) -> float:
        return sum(line.usd or 0.0 for line in self.lines)

    @property
    def idle_total(self) -> float:
        return sum(line.usd or 0.0 for line in self.idle)

    @property
    def unpriced(self) -> tuple[Line, ...]:
        return tuple(line for line in self.lines if line.usd is None)


class Context:
    """What an estimator may read: the whole plan, the usage and the prices."""

    def __init__(self, plan: Mapping[str, Any], usage: UsageSettings, book: PriceBook) -> None:
        self.resources: list[Mapping[str, Any]] = list(plan.get("resources", []))
        self.usage = usage
        self.book = book
        self.month = float(seconds_per_month())

    def of_type(self, token: str) -> list[Mapping[str, Any]]:
        return [r for r in self.resources if r["type"] == token]

    def charge(self, price_id: str, quantity: float, region: str = "*") -> Charge:
        price = self.book.price(price_id, region)
        billable = quantity if quantity < 0 else max(0.0, quantity - price.included)
        return Charge(price_id, quantity, billable, price.usd)


# --- Reading the rendered inputs -------------------------------------------------------------


def cpu_of(value: Any) -> float:
    text = str(value)
    return int(text[:-1]) / 1000 if text.endswith("m") else float(text)


def gib_of(value: Any) -> float:
    match = re.fullmatch(r"([0-9]+)(Mi|Gi|M|G)", str(value))
    if not match:
        raise CostError(f"cannot read memory size {value!r}")
    amount, unit = int(match.group(1)), match.group(2)
    return {"Mi": amount / 1024, "Gi": float(amount), "M": amount * 1e6 / 2**30, "G": amount * 1e9 / 2**30}[
        unit
    ]


def shape(template: Mapping[str, Any]) -> tuple[float, float]:
    """vCPU and GiB of one instance: the sum of its containers' limits (Cloud Run's defaults: 1, 512Mi)."""
    cpu = memory = 0.0
    for container in template.get("containers", []):
        limits = (container.get("resources") or {}).get("limits") or {}
        cpu += cpu_of(limits.get("cpu", "1"))
        memory += gib_of(limits.get("memory", "512Mi"))
    return cpu, memory


def secret_refs(template: Mapping[str, Any]) -> int:
    return sum(
        1
        for container in template.get("containers", [])
        for env in container.get("envs", [])
        if (env.get("valueSource") or {}).get("secretKeyRef")
    )
