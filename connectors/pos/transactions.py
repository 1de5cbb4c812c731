"""POS transactions: the documented schema, and each transaction as one Touchpoint.

Why one schema for the HTTP API and the file import: both end as the same events
(``order.completed`` / ``order.refunded`` / ``order.voided``), so both refuse the same
things with the same field names; the importer only turns a row into this shape first.

Idempotency is on (store id, transaction id): the message id is
``pos:{store_id}:{transaction_id}`` and the event log is unique on message id, so a till
that re-sends, or a file imported twice, never counts a sale twice. A refund or void names
the sale it reverses (``original_transaction_id``, optionally ``original_store_id`` when
it happened in another store) and carries the sale's message id as
``original_message_id``, the link later rules and reports follow.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, Self

import pydantic
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)

from connectors.pos.currencies import ISO_4217
from connectors.pos.pan import PAN_REASON, find_pan
from pipeline.envelope import Channel, Touchpoint
from pipeline.errors import ValidationError
from pipeline.identifiers import normalize_email, normalize_phone

Id = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=128)]
StoreId = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]
Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=256)]
#: Amounts are exact decimals, never negative, bounded. Digits after the point are not
#: limited: pydantic counts them through ``Decimal.as_tuple`` per value, which tripled the
#: cost of validating a transaction, and rules read the amounts as JSON numbers anyway.
Money = Annotated[Decimal, Field(ge=0, le=10**12)]
Currency = Annotated[str, StringConstraints(strip_whitespace=True, to_upper=True, max_length=8)]
Quantity = Annotated[Decimal, Field(gt=0, le=1_000_000)]

MAX_ITEMS = 1000
MAX_PROPERTIES = 200
MAX_MESSAGE_ID = 255
#: The customer fields, each an identifier kind of the same name ("feeds identity").
CUSTOMER_KINDS = ("loyalty_card", "email", "phone", "customer_id", "card_fingerprint")
#: Identifier of a transaction with no known customer: unique per sale (a refund of that
#: sale shares it), so it can never join two different customers.
ANONYMOUS_KIND = "pos_transaction"
RESERVED_PROPERTIES = frozenset(
    {
        "transaction_id",
        "store_id",
        "terminal_id",
        "cashier_id",
        "kind",
        "currency",
        "subtotal",
        "tax",
        "discount",
        "total",
        "item_count",
        "items",
        "original_transaction_id",
        "original_store_id",
        "original_message_id",
    }
)


class Kind(StrEnum):
    """What happened at the till."""

    SALE = "sale"
    REFUND = "refund"
    VOID = "void"


EVENT_TYPES = {
    Kind.SALE: "order.completed",
    Kind.REFUND: "order.refunded",
    Kind.VOID: "order.voided",
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class Totals(_Strict):
    """Amounts of the whole transaction, never negative (``kind`` says the direction).

    ``total`` is what the customer paid (or got back); it is not recomputed, since tills add
    rounding, tips and service charges that the other three do not show.
    """

    subtotal: Money
    tax: Money = Decimal(0)
    discount: Money = Decimal(0)
    total: Money


class LineItem(_Strict):
    """One line of the receipt."""

    sku: Id | None = None
    name: Text
    category: Text | None = None
    quantity: Quantity = Decimal(1)
    unit_price: Money


class Customer(_Strict):
    """Who the customer is, when the till knows; each field is an identifier.

    ``card_fingerprint`` is a token or fingerprint of the payment card from the payment
    terminal, never the card number itself (refused wherever it appears).
    """

    loyalty_card: Id | None = None
    email: Text | None = None
    phone: Text | None = None
    customer_id: Id | None = None
    card_fingerprint: Id | None = None

    @field_validator("email")
    @classmethod
    def _email(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return normalize_email(value)
        except ValueError:
            raise ValueError("not an email address") from None

    @field_validator("phone")
    @classmethod
    def _phone(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        region = (info.context or {}).get("default_region", "US")
        try:
            return normalize_phone(value, region)
        except ValueError:
            raise ValueError(
                f"not a phone number (numbers without +country use {region})"
            ) from None

    def identifiers(self) -> dict[str, str]:
        return {kind: value for kind in CUSTOMER_KINDS if (value := getattr(self, kind))}


class Transaction(_Strict):
    """One POS transaction as the API accepts it (JSON field names as documented)."""

    transaction_id: Id
    store_id: StoreId
    terminal_id: Id | None = None
    cashier_id: Id | None = None
    occurred_at: AwareDatetime
    kind: Kind = Kind.SALE
    currency: Currency
    totals: Totals
    items: list[LineItem] = Field(default_factory=list, max_length=MAX_ITEMS)
    customer: Customer | None = None
    original_transaction_id: Id | None = None
    original_store_id: StoreId | None = None
    properties: dict[str, Any] = Field(default_factory=dict, max_length=MAX_PROPERTIES)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        """Every cross-field rule in one callback (each Python callback costs time per row)."""
        if self.occurred_at.year in (1, 9999):  # may have no UTC instant (OverflowError)
            try:
                self.occurred_at.astimezone(UTC)
            except OverflowError:
                raise _FieldError("occurred_at", "out of range (years 1 to 9999 in UTC)") from None
        if self.currency not in ISO_4217:
            raise _FieldError("currency", "not an ISO 4217 currency code (three letters, e.g. EUR)")
        if self.properties and not RESERVED_PROPERTIES.isdisjoint(self.properties):
            clash = sorted(RESERVED_PROPERTIES.intersection(self.properties))[0]
            raise _FieldError(f"properties.{clash}", "is a transaction field, not a free property")
        if self.kind is Kind.SALE:
            if self.original_transaction_id is not None or self.original_store_id is not None:
                raise _FieldError("original_transaction_id", "only a refund or void has one")
        elif self.original_transaction_id is None:
            raise _FieldError(
                "original_transaction_id", f"a {self.kind.value} must name the sale it reverses"
            )
        longest = len("pos::") + 3 * len(self.store_id) + len(self.transaction_id)
        if longest > MAX_MESSAGE_ID and len(self.message_id) > MAX_MESSAGE_ID:
            raise _FieldError("transaction_id", "store id and transaction id are too long")
        return self

    @property
    def message_id(self) -> str:
        """The event's dedupe key: ``pos:{store_id}:{transaction_id}``."""
        return message_id(self.store_id, self.transaction_id)

    @property
    def original_message_id(self) -> str | None:
        """The message id of the sale a refund or void reverses."""
        if self.original_transaction_id is None:
            return None
        return message_id(self.original_store_id or self.store_id, self.original_transaction_id)


class _FieldError(ValueError):
    """A cross-field problem that belongs to one named field (not to the whole body)."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(reason)
        self.field, self.reason = field, reason


def message_id(store_id: str, transaction_id: str) -> str:
    """``pos:{store}:{transaction}``; ``%`` and ``:`` in the store id are escaped so that
    ``("a:b", "c")`` and ``("a", "b:c")`` can never share an id."""
    store = store_id.replace("%", "%25").replace(":", "%3A")
    return f"pos:{store}:{transaction_id}"


def parse_transaction(
    data: Any, *, default_region: str = "US", searched_for_pan: bool = False
) -> Transaction:
    """Validate one transaction; raise ``ValidationError`` naming the offending field.

    The card-number search runs first, on the raw input, so a card number is refused
    before any other check could quote it back. ``searched_for_pan`` is for a caller that
    already searched the raw input every value of ``data`` was copied from (the file
    importer searches each CSV row at once, which is cheaper) and found nothing.
    """
    if not isinstance(data, dict):
        raise ValidationError("body", "each transaction must be a JSON object")
    if not searched_for_pan:
        pan_at = find_pan(data)
        if pan_at is not None:
            raise ValidationError(pan_at, PAN_REASON)
    try:
        return Transaction.model_validate(data, context={"default_region": default_region})
    except pydantic.ValidationError as exc:
        first = exc.errors(include_input=False, include_url=False)[0]
        cause = first.get("ctx", {}).get("error")
        if isinstance(cause, _FieldError):
            raise ValidationError(cause.field, cause.reason) from None
        field = ".".join(str(part) for part in first["loc"]) or "body"
        reason = str(first["msg"]).removeprefix("Value error, ")
        raise ValidationError(field, reason) from None


def _quantity(value: Decimal) -> int | float:
    """A JSON number: whole quantities as ints (3, not 3.0), others as floats."""
    as_int = int(value)
    return as_int if as_int == value else float(value)


def touchpoint_fields(
    tx: Transaction,
    *,
    received_at: datetime,
    source: str = "pos",
    context: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The Touchpoint fields of one transaction (plain data; ingest validates dicts).

    Amounts become JSON numbers (floats) so that rules can compare them; the event keeps
    the till's currency beside them.
    """
    store_id, transaction_id = tx.store_id, tx.transaction_id
    own_id = message_id(store_id, transaction_id)
    customer = tx.customer
    identifiers: dict[str, Any] = customer.identifiers() if customer is not None else {}
    properties: dict[str, Any] = dict(tx.properties) if tx.properties else {}
    items = []
    units = Decimal(0)
    for item in tx.items:
        quantity, price = item.quantity, item.unit_price
        line: dict[str, Any] = {"name": item.name}
        if item.sku is not None:
            line["sku"] = item.sku
        if item.category is not None:
            line["category"] = item.category
        line["quantity"] = _quantity(quantity)
        line["unit_price"] = float(price)
        line["amount"] = float(quantity * price)
        units += quantity
        items.append(line)
    totals = tx.totals
    properties["transaction_id"] = transaction_id
    properties["store_id"] = store_id
    properties["kind"] = tx.kind.value
    properties["currency"] = tx.currency
    properties["subtotal"] = float(totals.subtotal)
    properties["tax"] = float(totals.tax)
    properties["discount"] = float(totals.discount)
    properties["total"] = float(totals.total)
    properties["item_count"] = _quantity(units)
    properties["items"] = items
    if tx.terminal_id is not None:
        properties["terminal_id"] = tx.terminal_id
    if tx.cashier_id is not None:
        properties["cashier_id"] = tx.cashier_id
    sale_id = own_id
    if tx.original_transaction_id is not None:
        original_store = tx.original_store_id or store_id
        sale_id = message_id(original_store, tx.original_transaction_id)
        properties["original_transaction_id"] = tx.original_transaction_id
        properties["original_store_id"] = original_store
        properties["original_message_id"] = sale_id
    if not identifiers:
        identifiers = {ANONYMOUS_KIND: sale_id}
    occurred_at = tx.occurred_at
    if occurred_at.tzinfo is not UTC:
        occurred_at = occurred_at.astimezone(UTC)
    if received_at.tzinfo is not UTC:
        received_at = received_at.astimezone(UTC)
    return {
        "message_id": own_id,
        "channel": Channel.POS,
        "type": EVENT_TYPES[tx.kind],
        "occurred_at": occurred_at,
        "received_at": received_at,
        "source": source,
        "identifiers": identifiers,
        "traits": {},
        "properties": properties,
        "context": context or {},
    }


_TOUCHPOINT_NEW = Touchpoint.__new__
_set = object.__setattr__


def to_touchpoint(
    tx: Transaction,
    *,
    received_at: datetime,
    source: str = "pos",
    context: dict[str, Any] | None = None,
) -> Touchpoint:
    """The transaction as a Touchpoint, built without validating a second time.

    Why this is safe: every field comes from a validated :class:`Transaction` and respects
    the envelope's rules by construction (fixed channel and types, aware UTC times, ids and
    property counts bounded by the schema); ``tests/unit/test_pos_transactions.py`` checks
    that the envelope validates to an equal value. Why not ``model_construct``: it looks
    up aliases and defaults field by field and cost about four times as much per event
    (measured: ~9 against ~2 microseconds); this sets the same four attributes it sets.
    """
    values = touchpoint_fields(tx, received_at=received_at, source=source, context=context)
    touchpoint = _TOUCHPOINT_NEW(Touchpoint)
    _set(touchpoint, "__dict__", values)
    _set(touchpoint, "__pydantic_fields_set__", set(values))
    _set(touchpoint, "__pydantic_extra__", None)
    _set(touchpoint, "__pydantic_private__", None)
    return touchpoint


__all__ = [
    "ANONYMOUS_KIND",
    "CUSTOMER_KINDS",
    "EVENT_TYPES",
    "Customer",
    "Kind",
    "LineItem",
    "Totals",
    "Transaction",
    "message_id",
    "parse_transaction",
    "to_touchpoint",
    "touchpoint_fields",
]
