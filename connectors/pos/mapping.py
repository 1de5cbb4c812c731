"""Column mappings: a small YAML file saying how an export's columns fill a transaction.

Why YAML and not code: every POS exports differently, and the person loading last year's
sales is rarely a programmer; a mapping names, per transaction field, the column (or a
``"{Date} {Time}"`` template of columns) to read, so an export loads without editing it.
Shipped mappings live in ``connectors/pos/mappings/`` and are found by name
(``--mapping square``); any other file is used by path. See the README for the format.
How a file is read (delimiter, encoding, null values, times) is shared with every file
import: :class:`connectors.files.FileMapping`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from connectors.files.mapping import (
    FileMapping,
    MappingError,
    load_mapping_file,
    shipped,
    template_columns,
    zone,
)
from connectors.pos.transactions import Kind

MAPPINGS_DIR = Path(__file__).with_name("mappings")

TransactionField = Literal[
    "transaction_id",
    "store_id",
    "terminal_id",
    "cashier_id",
    "occurred_at",
    "timezone",
    "kind",
    "currency",
    "original_transaction_id",
    "original_store_id",
    "totals.subtotal",
    "totals.tax",
    "totals.discount",
    "totals.total",
    "customer.loyalty_card",
    "customer.email",
    "customer.phone",
    "customer.customer_id",
    "customer.card_fingerprint",
]
ItemField = Literal["sku", "name", "category", "quantity", "unit_price", "amount"]
TotalField = Literal["subtotal", "tax", "discount", "total"]
REQUIRED_FIELDS = ("transaction_id", "store_id", "occurred_at")


class Mapping(FileMapping):
    """One validated POS mapping file (see the README's "Writing a mapping")."""

    decimal: Literal[".", ","] = "."
    currency: str | None = None
    kinds: dict[str, Kind] = Field(
        default_factory=lambda: {"sale": Kind.SALE, "refund": Kind.REFUND, "void": Kind.VOID}
    )
    jsonl: Literal["rows", "documents"] = "rows"
    fields: dict[TransactionField, str]
    items: dict[ItemField, str] = Field(default_factory=dict)
    sums: dict[TotalField, str] = Field(default_factory=dict)
    by_kind: dict[Kind, dict[TransactionField, str]] = Field(default_factory=dict)
    properties: dict[str, str] = Field(default_factory=dict)
    property_prefix: str | None = None

    @field_validator("kinds")
    @classmethod
    def _fold_kinds(cls, value: dict[str, Kind]) -> dict[str, Kind]:
        return {k.strip().casefold(): v for k, v in value.items()}

    @model_validator(mode="after")
    def _complete(self) -> Mapping:
        missing = [f for f in REQUIRED_FIELDS if f not in self.fields]
        if missing:
            raise ValueError(f"fields needs {', '.join(missing)}")
        if "currency" not in self.fields and not self.currency:
            raise ValueError("give fields.currency (a column) or currency (a fixed code)")
        has_total = "totals.total" in self.fields or "total" in self.sums
        has_subtotal = "totals.subtotal" in self.fields or "subtotal" in self.sums
        if not (has_total or has_subtotal or "amount" in self.items or "unit_price" in self.items):
            raise ValueError("no way to find the total: map totals.total, sums or item prices")
        if self.items and "name" not in self.items:
            raise ValueError("items needs a name column")
        return self

    def fields_for(self, kind: Kind) -> dict[str, str]:
        """The field -> column/template map that applies to rows of this kind."""
        merged: dict[str, str] = {}
        for overrides in (self.fields, self.by_kind.get(kind, {})):
            for name, spec in overrides.items():
                merged[name] = spec
        return merged


def shipped_mappings() -> list[str]:
    """Names of the mappings that come with the hub."""
    return shipped(MAPPINGS_DIR)


def load_mapping(name_or_path: str) -> Mapping:
    """A shipped mapping by name (``square``) or any mapping file by path."""
    return load_mapping_file(name_or_path, MAPPINGS_DIR, Mapping)


__all__ = [
    "MAPPINGS_DIR",
    "Mapping",
    "MappingError",
    "load_mapping",
    "shipped_mappings",
    "template_columns",
    "zone",
]
