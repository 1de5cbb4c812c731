"""Export rows -> transaction documents, as a mapping says (the importer's inner loop).

Why compiled against the header: a mapping names columns, the file has positions; resolving
them once per file leaves a list of small getters per field, so each row costs only its
values. Columns the file does not have are dropped with a note (older exports of the same
POS often lack newer columns), except the ones a transaction cannot do without.

Rows of one transaction (line-item exports repeat the order fields on every row, or only on
the first) arrive consecutively and are built together: transaction fields from the first
row that has them, one item per row, ``sums`` added over the rows. Refund and void rows are
often written negative; their amounts and quantities are taken as absolute values because
the schema carries the direction in ``kind``. Values are never quoted in errors.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

from connectors.files.columns import Columns, Getter, RowError, row_time
from connectors.pos.mapping import REQUIRED_FIELDS, Mapping, MappingError
from connectors.pos.transactions import Kind

_QUARTER_CENT = Decimal("0.0001")
_MONEY_KEEP = frozenset("0123456789.,-")
#: Why a row with 1e30 or 1e999999 in a number cell is refused here: the schema would
#: refuse it anyway (amounts up to 10**12, quantities up to 10**6), but the sums, unit
#: prices and rounding done first overflow the decimal context, which raised and stopped
#: the whole import.
OUT_OF_RANGE = "a number is out of range (amounts go up to 10**12, quantities up to 10**6)"


class CompiledMapping:
    """A mapping bound to one file's header (``None`` for JSON Lines rows keyed by name)."""

    def __init__(self, mapping: Mapping, header: Sequence[str] | None) -> None:
        self.mapping = mapping
        self._notes: dict[str, None] = {}
        self._nulls = frozenset(mapping.null_values)
        self._columns = Columns(header, self._nulls)
        self.csv = header is not None
        self._kind_getter = self._optional("kind", mapping.fields.get("kind"))
        self._kinds = mapping.kinds
        self._fields: dict[Kind, list[tuple[str, str, str, int, Getter]]] = {}
        for kind in Kind:
            compiled = []
            for field, spec in mapping.fields_for(kind).items():
                if field == "kind":
                    continue
                getter = self._optional(field, spec, required=field in REQUIRED_FIELDS)
                if getter is not None:
                    section, _, key = field.rpartition(".")
                    # A plain column of a CSV is read inline (no call): position >= 0.
                    position = self._columns.position(spec)
                    compiled.append((section, key, spec, position, getter))
            self._fields[kind] = compiled
        #: True when a value may combine several columns ("{Date} {Time}"): the importer
        #: then searches the built document for card numbers, not only each raw cell.
        self.has_templates = any(
            "{" in spec
            for spec in (
                *mapping.fields.values(),
                *mapping.items.values(),
                *mapping.properties.values(),
                *(v for o in mapping.by_kind.values() for v in o.values()),
            )
        )
        self._ids = {
            kind: (self._lookup(fields, "store_id"), self._lookup(fields, "transaction_id"))
            for kind, fields in self._fields.items()
        }
        self._items = [
            (key, spec, getter)
            for key, spec in mapping.items.items()
            if (getter := self._optional(f"items.{key}", spec)) is not None
        ]
        self._item_texts = [i for i in self._items if i[0] in ("sku", "name", "category")]
        numbers = {key: (spec, getter) for key, spec, getter in self._items}
        self._item_numbers = tuple(numbers.get(k) for k in ("quantity", "unit_price", "amount"))
        self._sums = [
            (key, spec, getter)
            for key, spec in mapping.sums.items()
            if (getter := self._optional(f"sums.{key}", spec)) is not None
        ]
        self._properties = [
            (name, spec, getter)
            for name, spec in mapping.properties.items()
            if (getter := self._optional(f"properties.{name}", spec)) is not None
        ]
        if mapping.property_prefix and header is not None:
            prefix = mapping.property_prefix
            for column in header:
                if column.startswith(prefix) and len(column) > len(prefix):
                    getter = self._columns.getter(column)
                    assert getter is not None  # the column is in the header
                    self._properties.append((column[len(prefix) :], column, getter))

    @property
    def notes(self) -> list[str]:
        """What the mapping asks for that this file cannot give (ignored fields)."""
        return list(self._notes)

    # -- compiling -------------------------------------------------------------------------

    def _optional(self, field: str, spec: str | None, *, required: bool = False) -> Getter | None:
        if spec is None:
            return None
        getter = self._columns.getter(spec)
        if getter is None:
            absent = self._columns.missing(spec)
            message = f"{field}: no column {', '.join(map(repr, absent))} in the file"
            if required:
                raise MappingError(f"mapping {self.mapping.name!r}: {message}")
            self._notes[f"ignoring {message}"] = None
        return getter

    @staticmethod
    def _lookup(fields: list[tuple[str, str, str, int, Getter]], key: str) -> Getter:
        return next(getter for section, k, _, _, getter in fields if not section and k == key)

    # -- reading ---------------------------------------------------------------------------

    def kind(self, row: Any) -> Kind | None:
        """The row's kind; ``None`` when the kind column is blank (or not mapped)."""
        if self._kind_getter is None:
            return None
        raw = self._kind_getter(row)
        if raw is None:
            return None
        found = self._kinds.get(raw.casefold())
        if found is None:
            spec = self.mapping.fields["kind"]
            known = ", ".join(sorted(self._kinds))
            raise RowError("kind", f"column {spec!r}: value is not one of the mapping's {known}")
        return found

    def ids(self, row: Any, kind: Kind) -> tuple[str | None, str | None]:
        """(store id, transaction id) of a row read as ``kind``; blank ones are ``None``."""
        store_of, transaction_of = self._ids[kind]
        return store_of(row), transaction_of(row)

    def build(
        self, rows: Sequence[Any], kind: Kind | None = None
    ) -> tuple[dict[str, Any], list[int]]:
        """One transaction document from its rows, plus the row index of each item.

        ``kind`` is the group's kind when the caller already read it (saves a lookup).
        """
        try:
            return self._build(rows, kind)
        except ArithmeticError:  # decimal Overflow / InvalidOperation on absurd numbers
            raise RowError("totals", OUT_OF_RANGE) from None

    def _build(self, rows: Sequence[Any], kind: Kind | None) -> tuple[dict[str, Any], list[int]]:
        first = rows[0]
        if kind is None:
            kind = self.kind(first) or Kind.SALE
        reverse = kind is not Kind.SALE
        tx: dict[str, Any] = {"kind": kind.value}
        totals: dict[str, Any] = {}
        customer: dict[str, Any] = {}
        zone_name: str | None = None
        width, nulls, mark = len(first), self._nulls, self.mapping.decimal
        for section, key, spec, position, getter in self._fields[kind]:
            if 0 <= position < width:
                value = first[position].strip() or None
                if value in nulls:
                    value = None
            else:
                value = getter(first)
            if value is None and len(rows) > 1:
                value = next((v for r in rows[1:] if (v := getter(r)) is not None), None)
            if value is None:
                continue
            if section == "totals":
                amount = _decimal(value, mark)
                if amount is None:
                    raise RowError(f"totals.{key}", f"column {spec!r}: not a number")
                totals[key] = abs(amount) if reverse or key == "discount" else amount
            elif section == "customer":
                customer[key] = value
            elif key == "timezone":
                zone_name = value
            else:
                tx[key] = value
        tx.setdefault("currency", self.mapping.currency)
        if "occurred_at" in tx:
            spec = self.mapping.fields["occurred_at"]
            tx["occurred_at"] = row_time(
                self.mapping, tx["occurred_at"], zone_name, field="occurred_at", spec=spec
            )
        items, item_rows = self._items_of(rows, reverse)
        for key, spec, getter in self._sums:
            if key not in totals:
                total = Decimal(0)
                for row in rows:
                    value = getter(row)
                    if value is not None:
                        total += self._money(value, spec, f"totals.{key}")
                totals[key] = abs(total) if reverse or key == "discount" else total
        if "subtotal" not in totals and items and all("unit_price" in i for i in items):
            totals["subtotal"] = sum((i["quantity"] * i["unit_price"] for i in items), Decimal(0))
        elif "subtotal" not in totals and "total" in totals:  # exports with a total only
            totals["subtotal"] = totals["total"] - totals.get("tax", 0) + totals.get("discount", 0)
        if "total" not in totals and "subtotal" in totals:
            totals["total"] = (
                totals["subtotal"] - totals.get("discount", 0) + totals.get("tax", 0)
            ).quantize(_QUARTER_CENT)
        tx["totals"] = totals
        if items:
            tx["items"] = items
        if customer:
            tx["customer"] = customer
        if self._properties:
            properties = {}
            for name, _, getter in self._properties:
                value = getter(first)
                if value is not None:
                    properties[name] = value
            if properties:
                tx["properties"] = properties
        return tx, item_rows

    def _items_of(
        self, rows: Sequence[Any], reverse: bool
    ) -> tuple[list[dict[str, Any]], list[int]]:
        """One item per row that has any item column; the row index of each item."""
        items: list[dict[str, Any]] = []
        item_rows: list[int] = []
        if not self._items:
            return items, item_rows
        mark = self.mapping.decimal
        quantity_of, price_of, amount_of = self._item_numbers
        for position, row in enumerate(rows):
            item: dict[str, Any] = {}
            for key, _, get in self._item_texts:
                text = get(row)
                if text is not None:
                    item[key] = text
            quantity_text = quantity_of[1](row) if quantity_of else None
            price_text = price_of[1](row) if price_of else None
            amount_text = amount_of[1](row) if amount_of else None
            if not item and quantity_text is None and price_text is None and amount_text is None:
                continue
            index = len(items)
            try:
                quantity = Decimal(1)
                if quantity_text is not None:
                    parsed = _decimal(quantity_text, mark)
                    if parsed is None:
                        raise self._not_number(quantity_of, f"items.{index}.quantity", position)
                    quantity = abs(parsed) if reverse else parsed
                item["quantity"] = quantity
                if price_text is not None:
                    price = _decimal(price_text, mark)
                    if price is None:
                        raise self._not_number(price_of, f"items.{index}.unit_price", position)
                    item["unit_price"] = abs(price) if reverse else price
                elif amount_text is not None:
                    amount = _decimal(amount_text, mark)
                    if amount is None:
                        raise self._not_number(amount_of, f"items.{index}.unit_price", position)
                    if quantity == 0:
                        reason = "must be greater than 0"
                        raise RowError(f"items.{index}.quantity", reason, position)
                    amount = abs(amount) if reverse else amount
                    item["unit_price"] = (amount / quantity).quantize(_QUARTER_CENT)
            except ArithmeticError:
                raise RowError(f"items.{index}", OUT_OF_RANGE, position) from None
            items.append(item)
            item_rows.append(position)
        return items, item_rows

    @staticmethod
    def _not_number(source: tuple[str, Getter] | None, field: str, item: int | None) -> RowError:
        spec = source[0] if source else "?"
        return RowError(field, f"column {spec!r}: not a number", item)

    # -- values ----------------------------------------------------------------------------

    def _money(self, text: str, spec: str, field: str) -> Decimal:
        value = _decimal(text, self.mapping.decimal)
        if value is None:
            raise RowError(field, f"column {spec!r}: not a number")
        return value


def _decimal(text: str, decimal_mark: str) -> Decimal | None:
    """``19.99``, ``$1,234.50``, ``-€3,20`` (with ``decimal: ","``), ``(4.00)`` -> Decimal."""
    if decimal_mark == ".":
        try:
            value = Decimal(text)
            return value if value.is_finite() else None
        except InvalidOperation:
            pass
    negative = text.startswith("(") and text.endswith(")")
    kept = "".join(c for c in text if c in _MONEY_KEEP)
    comma_decimal = decimal_mark == ","
    kept = kept.replace(".", "").replace(",", ".") if comma_decimal else kept.replace(",", "")
    if kept.count("-") > 1 or (kept.count("-") == 1 and not kept.startswith("-")):
        return None
    try:
        value = Decimal(kept)
    except InvalidOperation:
        return None
    if not value.is_finite():
        return None
    return -value if negative else value


__all__ = ["CompiledMapping", "RowError"]
