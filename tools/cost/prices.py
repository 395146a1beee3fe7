"""The price book: tools/prices.yaml, checked against tools/prices.schema.json."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path

import jsonschema
import yaml

ROOT = Path(__file__).resolve().parents[2]
PRICES = ROOT / "tools" / "prices.yaml"
SCHEMA = ROOT / "tools" / "prices.schema.json"


class CostError(ValueError):
    """The plan holds something the price file cannot price; the message says what."""


@dataclass(frozen=True)
class Price:
    """One price from the price file."""

    id: str
    description: str
    unit: str
    usd: float | None
    regions: tuple[str, ...]
    source: str
    checked: str
    basis: str
    included: float = 0.0
    free_amount: float = 0.0
    free_scope: str | None = None

    def applies_in(self, region: str) -> bool:
        return "*" in self.regions or region in self.regions


@dataclass(frozen=True)
class PriceBook:
    """The validated price file."""

    version: int
    checked: str
    prices: Mapping[str, Price]
    free: Mapping[str, str]

    def price(self, price_id: str, region: str = "*") -> Price:
        if price_id not in self.prices:
            raise CostError(f"tools/prices.yaml has no price {price_id!r}")
        price = self.prices[price_id]
        if region != "*" and not price.applies_in(region):
            raise CostError(
                f"tools/prices.yaml: {price_id} has no price for region {region!r}"
                f" (it lists {', '.join(price.regions)}); add that region's price and its source"
            )
        return price

    def free_reason(self, resource_type: str) -> str | None:
        return next((why for pattern, why in self.free.items() if fnmatch(resource_type, pattern)), None)


def load_prices(path: Path = PRICES, schema_path: Path = SCHEMA) -> PriceBook:
    """The price file, checked against its JSON Schema."""
    document = yaml.safe_load(path.read_text())
    schema = json.loads(schema_path.read_text())
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(document), key=str)
    if errors:
        problems = "; ".join(f"{'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}" for e in errors)
        raise CostError(f"{path.name} does not match {schema_path.name}: {problems}")
    prices = {
        price_id: Price(
            id=price_id,
            description=entry["description"],
            unit=entry["unit"],
            usd=entry["usd"],
            regions=tuple(entry["regions"]),
            source=entry["source"],
            checked=entry["checked"],
            basis=entry["basis"],
            included=float(entry.get("included", 0)),
            free_amount=float((entry.get("free") or {}).get("amount", 0)),
            free_scope=(entry.get("free") or {}).get("scope"),
        )
        for price_id, entry in document["prices"].items()
    }
    return PriceBook(
        version=document["version"],
        checked=document["checked"],
        prices=prices,
        free=document["free"],
    )
