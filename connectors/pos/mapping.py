"""Column mappings: a small YAML file saying how an export's columns fill a transaction.

Why YAML and not code: every POS exports differently, and the person loading last year's
sales is rarely a programmer; a mapping names, per transaction field, the column (or a
``"{Date} {Time}"`` template of columns) to read, so an export loads without editing it.
Shipped mappings live in ``connectors/pos/mappings/`` and are found by name
(``--mapping square``); any other file is used by path. See the README for the format.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pydantic
import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from connectors.pos.transactions import Kind
from pipeline.errors import HubError

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
_TEMPLATE_PART = re.compile(r"\{([^{}]+)\}")


class MappingError(HubError):
    """A mapping file that cannot be used (missing, unreadable, or invalid); exit 2."""


class Mapping(BaseModel):
    """One validated mapping file (see the README's "Writing a mapping")."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=64)
    description: str = ""
    delimiter: str = Field(default=",", min_length=1, max_length=1)
    encoding: str = "utf-8-sig"
    decimal: Literal[".", ","] = "."
    timestamp_format: str = "iso"
    timezone: str = "UTC"
    timezones: dict[str, str] = Field(default_factory=dict)
    currency: str | None = None
    null_values: list[str] = Field(default_factory=list)
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

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        zone(value)
        return value

    @field_validator("timezones")
    @classmethod
    def _zones(cls, value: dict[str, str]) -> dict[str, str]:
        for iana in value.values():
            zone(iana)
        return value

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


_ZONES: dict[str, ZoneInfo] = {}


def zone(name: str) -> ZoneInfo:
    """An IANA time zone, cached; ``ValueError`` for an unknown name."""
    found = _ZONES.get(name)
    if found is None:
        try:
            found = _ZONES[name] = ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown IANA time zone {name!r}") from None
    return found


def template_columns(spec: str) -> list[str]:
    """The columns a field spec reads: ``"{Date} {Time}"`` -> Date, Time; else the spec."""
    found = _TEMPLATE_PART.findall(spec)
    return found if found else [spec]


def shipped_mappings() -> list[str]:
    """Names of the mappings that come with the hub."""
    return sorted(p.stem for p in MAPPINGS_DIR.glob("*.yaml"))


def load_mapping(name_or_path: str) -> Mapping:
    """A shipped mapping by name (``square``) or any mapping file by path."""
    candidate = MAPPINGS_DIR / f"{name_or_path}.yaml"
    path = candidate if "/" not in name_or_path and candidate.is_file() else Path(name_or_path)
    if not path.is_file():
        raise MappingError(
            f"no mapping {name_or_path!r}: not a file, nor one of {', '.join(shipped_mappings())}"
        )
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise MappingError(f"mapping {path}: cannot read it: {reason}") from None
    if not isinstance(document, dict):
        raise MappingError(f"mapping {path}: must be a YAML mapping (key: value lines)")
    document.setdefault("name", path.stem)
    try:
        return Mapping.model_validate(document)
    except pydantic.ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(part) for part in first["loc"] if part != "[key]") or "(top level)"
        reason = str(first["msg"]).removeprefix("Value error, ")
        raise MappingError(f"mapping {path}: {where}: {reason}") from None


__all__ = [
    "MAPPINGS_DIR",
    "Mapping",
    "MappingError",
    "load_mapping",
    "shipped_mappings",
    "template_columns",
    "zone",
]
