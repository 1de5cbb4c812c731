"""POS transactions: schema, card-number refusal, kinds, refund linkage, message ids, and
the mapping/row layer of the file import (pure: no database)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from connectors.pos import (
    MappingError,
    find_pan,
    load_mapping,
    luhn_valid,
    message_id,
    parse_transaction,
    shipped_mappings,
    to_touchpoint,
    touchpoint_fields,
)
from connectors.pos.http import TooManyTransactions, read_transactions
from connectors.pos.pan import contains_pan, gtin_valid, may_hold_pan
from connectors.pos.rows import CompiledMapping, RowError
from pipeline import Touchpoint, ValidationError

NOW = datetime(2026, 11, 2, 12, 0, tzinfo=UTC)
#: Well-known test card numbers (Visa, Mastercard, Amex, Discover, Visa 13 digits).
PANS = ["4111111111111111", "5555555555554444", "378282246310005", "6011111111111117"]
PANS += ["4222222222222"]


def sale(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "transaction_id": "T-1001",
        "store_id": "S-01",
        "terminal_id": "R2",
        "cashier_id": "C7",
        "occurred_at": "2026-11-02T10:15:00+01:00",
        "kind": "sale",
        "currency": "EUR",
        "totals": {"subtotal": "30.00", "tax": 5.7, "discount": 0, "total": "35.70"},
        "items": [
            {
                "sku": "SKU-1",
                "name": "Coffee",
                "category": "Grocery",
                "quantity": 2,
                "unit_price": 10,
            },
            {"sku": "SKU-2", "name": "Mug", "quantity": "1", "unit_price": "10.00"},
        ],
        "customer": {"loyalty_card": "LC-0042", "email": " Ann@Example.COM "},
        "properties": {"payment_method": "card"},
    }
    body.update(overrides)
    return body


def refusal(body: Any) -> ValidationError:
    with pytest.raises(ValidationError) as caught:
        parse_transaction(body)
    return caught.value


# -- card numbers -----------------------------------------------------------------------


@pytest.mark.parametrize("pan", PANS)
def test_known_card_numbers_pass_luhn(pan: str) -> None:
    assert luhn_valid(pan)
    assert not luhn_valid(pan[:-1] + str((int(pan[-1]) + 1) % 10))


@pytest.mark.parametrize(
    "text",
    ["4111111111111111", "4111 1111 1111 1111", "4111-1111-1111-1111", "card 4111111111111111!"],
)
def test_card_numbers_are_found_in_any_spelling(text: str) -> None:
    assert contains_pan(text)


@pytest.mark.parametrize(
    "text",
    [
        "4111111111111112",  # fails Luhn
        "411111111111",  # 12 digits
        "41111111111111111111",  # 20 digits
        "+49 1512 3456 7890",  # a phone number in international form
        "S000-000000123",  # an id with 12 digits
        "2026-11-02T10:15:00+01:00",
    ],
)
def test_other_numbers_are_not_card_numbers(text: str) -> None:
    assert not contains_pan(text)


def _luhn_valid_with_first_digit(first: str) -> str:
    for n in itertools.count(int(first + "0" * 15)):
        if luhn_valid(str(n)):
            return str(n)
    raise AssertionError("unreachable")


@pytest.mark.parametrize("first", ["7", "8", "9"])
def test_luhn_valid_loyalty_numbers_outside_payment_industries_are_kept(first: str) -> None:
    loyalty = _luhn_valid_with_first_digit(first)
    assert len(loyalty) == 16 and luhn_valid(loyalty) and not contains_pan(loyalty)
    parsed = parse_transaction(sale(customer={"loyalty_card": loyalty}))
    assert parsed is not None


@pytest.mark.parametrize("first", ["1", "2", "3", "4", "5", "6"])
def test_luhn_valid_numbers_of_payment_industries_are_refused(first: str) -> None:
    assert contains_pan(_luhn_valid_with_first_digit(first))


def _ean_that_passes_luhn() -> str:
    for n in itertools.count(4_006_381_333_900):
        digits = str(n)
        if gtin_valid(digits) and luhn_valid(digits):
            return digits
    raise AssertionError("unreachable")


def test_barcode_in_sku_is_allowed_but_not_elsewhere() -> None:
    ean = _ean_that_passes_luhn()
    items = [{"sku": ean, "name": "Jam", "unit_price": 3}]
    parse_transaction(sale(items=items))  # a GTIN in the sku is a barcode
    error = refusal(sale(items=[{"sku": "J", "name": f"Jam {ean}", "unit_price": 3}]))
    assert error.field == "items.0.name"


@pytest.mark.parametrize(
    ("where", "field"),
    [
        (lambda b, pan: b["customer"].update(loyalty_card=pan), "customer.loyalty_card"),
        (lambda b, pan: b["customer"].update(card_fingerprint=pan), "customer.card_fingerprint"),
        (lambda b, pan: b["items"][1].update(name=f"gift for {pan}"), "items.1.name"),
        (lambda b, pan: b["properties"].update(note={"deep": [1, pan]}), "properties.note.deep.1"),
        (lambda b, pan: b.update(transaction_id=pan), "transaction_id"),
        (lambda b, pan: b["properties"].update(raw=int(pan.replace(" ", ""))), "properties.raw"),
    ],
)
def test_a_card_number_anywhere_is_refused_naming_the_field_never_the_number(
    where: Any, field: str
) -> None:
    body = sale()
    pan = "4111 1111 1111 1111"
    where(body, pan)
    error = refusal(body)
    assert error.field == field
    for shown in (str(error), error.message, error.field):
        assert "4111" not in shown and "1111" not in shown


def test_card_number_as_a_property_key_is_refused_without_showing_it() -> None:
    error = refusal(sale(properties={"5555555555554444": "x"}))
    assert error.field == "properties" and "5555" not in str(error)


def test_card_number_is_refused_before_other_checks_could_quote_it() -> None:
    error = refusal(sale(currency="4111111111111111"))
    assert error.field == "currency" and "4111" not in str(error)


def test_find_pan_and_row_prefilter_agree() -> None:
    assert find_pan({"a": ["x", {"b": "6011-1111-1111-1117"}]}) == "a.1.b"
    assert find_pan(sale()) is None
    assert may_hold_pan(["x", "6011 1111 1111 1117"])
    assert not may_hold_pan(["S000-000000123", "2026-11-02T10:15:00+01:00", "35.70"])


# -- schema -----------------------------------------------------------------------------


def test_a_valid_sale_is_normalized() -> None:
    tx = parse_transaction(sale(currency=" eur "), default_region="DE")
    assert tx.currency == "EUR"
    assert tx.occurred_at.utcoffset() == timedelta(hours=1)
    assert tx.totals.total == Decimal("35.70")
    assert tx.customer is not None and tx.customer.email == "ann@example.com"
    assert [i.quantity for i in tx.items] == [2, 1]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"occurred_at": "2026-11-02T10:15:00"}, "occurred_at"),
        ({"currency": "EURO"}, "currency"),
        ({"currency": "XYZ"}, "currency"),
        ({"kind": "exchange"}, "kind"),
        ({"totals": {"subtotal": -1, "total": 1}}, "totals.subtotal"),
        ({"totals": {"subtotal": 1}}, "totals.total"),
        ({"totals": {"subtotal": "NaN", "total": 1}}, "totals.subtotal"),
        ({"items": [{"name": "x", "unit_price": 1, "quantity": 0}]}, "items.0.quantity"),
        ({"items": [{"unit_price": 1}]}, "items.0.name"),
        ({"customer": {"email": "not-an-address"}}, "customer.email"),
        ({"customer": {"phone": "12"}}, "customer.phone"),
        ({"transactionId": "T-1"}, "transactionId"),
        ({"store_id": ""}, "store_id"),
        ({"properties": {"total": 3}}, "properties.total"),
        ({"original_transaction_id": "T-1"}, "original_transaction_id"),
        ({"kind": "refund"}, "original_transaction_id"),
        ({"kind": "void"}, "original_transaction_id"),
        ({"store_id": ":" * 64, "transaction_id": "t" * 128}, "transaction_id"),
    ],
)
def test_invalid_transactions_name_the_field(change: dict[str, Any], field: str) -> None:
    error = refusal(sale(**change))
    assert error.field == field, error


def test_missing_field_and_wrong_body_are_named() -> None:
    body = sale()
    del body["store_id"]
    assert refusal(body).field == "store_id"
    assert refusal(["not", "an", "object"]).field == "body"


def test_phone_is_normalized_with_the_default_region() -> None:
    tx = parse_transaction(sale(customer={"phone": "030 1234567"}), default_region="DE")
    assert tx.customer is not None and tx.customer.phone == "+49301234567"


# -- touchpoints ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "event_type"),
    [("sale", "order.completed"), ("refund", "order.refunded"), ("void", "order.voided")],
)
def test_each_kind_becomes_its_event_type(kind: str, event_type: str) -> None:
    extra = {} if kind == "sale" else {"original_transaction_id": "T-0999"}
    tx = parse_transaction(sale(kind=kind, transaction_id=f"T-{kind}", **extra))
    touchpoint = to_touchpoint(tx, received_at=NOW)
    assert touchpoint.type == event_type
    assert touchpoint.channel == "pos"
    assert touchpoint.message_id == f"pos:S-01:T-{kind}"


def test_touchpoint_carries_what_rules_need() -> None:
    touchpoint = to_touchpoint(parse_transaction(sale()), received_at=NOW)
    props = touchpoint.properties
    assert props["total"] == 35.7 and props["currency"] == "EUR"
    assert props["store_id"] == "S-01" and props["terminal_id"] == "R2"
    assert props["cashier_id"] == "C7" and props["item_count"] == 3
    assert props["payment_method"] == "card"
    assert props["items"][0] == {
        "name": "Coffee",
        "sku": "SKU-1",
        "category": "Grocery",
        "quantity": 2,
        "unit_price": 10.0,
        "amount": 20.0,
    }
    assert touchpoint.identifiers == {"loyalty_card": "LC-0042", "email": "ann@example.com"}
    assert touchpoint.occurred_at == datetime(2026, 11, 2, 9, 15, tzinfo=UTC)


def test_refund_is_linked_to_its_sale_even_in_another_store() -> None:
    refund = sale(
        kind="refund",
        transaction_id="R-1",
        store_id="S-02",
        original_transaction_id="T-1001",
        original_store_id="S-01",
    )
    props = to_touchpoint(parse_transaction(refund), received_at=NOW).properties
    assert props["original_message_id"] == "pos:S-01:T-1001"
    same_store = sale(kind="void", transaction_id="V-1", original_transaction_id="T-1001")
    props = to_touchpoint(parse_transaction(same_store), received_at=NOW).properties
    assert props["original_message_id"] == message_id("S-01", "T-1001")


def test_anonymous_sale_and_its_refund_share_a_transaction_identifier() -> None:
    anonymous = parse_transaction(sale(customer=None))
    refund = parse_transaction(
        sale(customer=None, kind="refund", transaction_id="R-9", original_transaction_id="T-1001")
    )
    sale_ids = to_touchpoint(anonymous, received_at=NOW).identifiers
    refund_ids = to_touchpoint(refund, received_at=NOW).identifiers
    assert sale_ids == refund_ids == {"pos_transaction": "pos:S-01:T-1001"}
    other = parse_transaction(sale(customer=None, transaction_id="T-1002"))
    assert to_touchpoint(other, received_at=NOW).identifiers != sale_ids


def test_message_ids_cannot_collide_through_colons() -> None:
    assert message_id("a:b", "c") != message_id("a", "b:c")
    assert message_id("a%3Ab", "c") != message_id("a:b", "c")


@pytest.mark.parametrize(
    "body",
    [
        sale(),
        sale(customer=None, items=[], properties={}),
        sale(kind="refund", transaction_id="R", original_transaction_id="T-1001"),
        sale(occurred_at="2026-03-29T01:30:00-07:00", terminal_id=None, cashier_id=None),
    ],
)
def test_constructed_touchpoint_equals_a_validated_one(body: dict[str, Any]) -> None:
    """to_touchpoint skips validation; the envelope must agree with what it built."""
    tx = parse_transaction(body)
    received = datetime(2026, 11, 2, 13, 0, tzinfo=timezone(timedelta(hours=1)))
    built = to_touchpoint(tx, received_at=received, source="pos-import", context={"a": 1})
    validated = Touchpoint.model_validate(
        touchpoint_fields(tx, received_at=received, source="pos-import", context={"a": 1})
    )
    assert built == validated
    assert built.model_dump() == validated.model_dump()
    assert built.received_at.tzinfo is UTC and built.occurred_at.tzinfo is UTC


# -- HTTP bodies ------------------------------------------------------------------------


def test_bodies_may_be_one_a_list_or_a_wrapper() -> None:
    single = read_transactions({**sale(), "writeKey": "k"}, received_at=NOW, default_region="US")
    assert single.single and len(single.touchpoints) == 1
    many = read_transactions(
        [sale(), sale(transaction_id="T-2", currency="??")], received_at=NOW, default_region="US"
    )
    assert not many.single and many.positions == [0]
    assert many.rejected == [
        {"index": 1, "field": "currency", "reason": many.rejected[0]["reason"]}
    ]
    wrapped = read_transactions({"transactions": [sale()]}, received_at=NOW, default_region="US")
    assert len(wrapped.touchpoints) == 1


@pytest.mark.parametrize(
    ("body", "field"), [("x", "body"), ({"transactions": {}}, "transactions"), ([], "transactions")]
)
def test_bad_bodies_are_refused_whole(body: Any, field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        read_transactions(body, received_at=NOW, default_region="US")
    assert caught.value.field == field


def test_too_many_transactions_in_one_request() -> None:
    with pytest.raises(TooManyTransactions):
        read_transactions([sale()] * 1001, received_at=NOW, default_region="US")


# -- mappings and rows ------------------------------------------------------------------

SQUARE_HEADER = [
    "Date",
    "Time",
    "Time Zone",
    "Category",
    "Item",
    "Qty",
    "Price Point Name",
    "SKU",
    "Modifiers Applied",
    "Gross Sales",
    "Discounts",
    "Net Sales",
    "Tax",
    "Transaction ID",
    "Payment ID",
    "Device Name",
    "Notes",
    "Details",
    "Event Type",
    "Location",
    "Dining Option",
    "Customer ID",
    "Customer Name",
    "Customer Reference ID",
    "Unit",
    "Count",
    "Itemization Type",
    "Fulfillment Note",
    "Channel",
    "Token",
    "Card Brand",
    "PAN Suffix",
]


def square_row(**values: str) -> list[str]:
    defaults = {
        "Date": "2026-06-11",
        "Time": "13:51:07",
        "Time Zone": "Pacific Time (US & Canada)",
        "Category": "None",
        "Item": "Lemonade",
        "Qty": "2.0",
        "Gross Sales": "$1,010.00",
        "Discounts": "-$10.00",
        "Tax": "$0.77",
        "Transaction ID": "mxTXA",
        "Event Type": "Payment",
        "Location": "Sunrise",
        "Device Name": "Terminal 1",
        "Card Brand": "Visa",
        "PAN Suffix": "0088",
    }
    defaults.update(values)
    return [defaults.get(column, "") for column in SQUARE_HEADER]


def test_shipped_mappings_load_by_name() -> None:
    assert {"generic", "square"} <= set(shipped_mappings())
    for name in shipped_mappings():
        assert load_mapping(name).name == name


def test_square_rows_become_one_transaction() -> None:
    compiled = CompiledMapping(load_mapping("square"), SQUARE_HEADER)
    assert compiled.notes == ["ignoring cashier_id: no column 'Employee' in the file"]
    rows = [square_row(), square_row(Item="Matcha", Qty="1.0", **{"Gross Sales": "$9.00"})]
    document, item_rows = compiled.build(rows)
    tx = parse_transaction(document)
    assert item_rows == [0, 1]
    assert tx.transaction_id == "mxTXA" and tx.store_id == "Sunrise"
    assert tx.occurred_at == datetime(2026, 6, 11, 20, 51, 7, tzinfo=UTC)  # PDT = UTC-7
    assert tx.currency == "USD"
    assert tx.items[0].category is None and tx.items[0].unit_price == Decimal("505")
    assert tx.totals.subtotal == Decimal("1019.00") and tx.totals.discount == Decimal("20.00")
    assert tx.totals.total == Decimal("1000.54")
    assert tx.properties == {"card_brand": "Visa"}


def test_square_refund_gets_its_own_id_and_links_to_the_sale() -> None:
    compiled = CompiledMapping(load_mapping("square"), SQUARE_HEADER)
    refund = {"Event Type": "Refund", "Qty": "-1.0", "Gross Sales": "($5.00)", "Discounts": ""}
    row = square_row(**refund)
    document, _ = compiled.build([row], compiled.kind(row))
    tx = parse_transaction(document)
    assert tx.kind == "refund" and tx.original_transaction_id == "mxTXA"
    assert tx.transaction_id == "mxTXA:refund:2026-06-11T13:51:07"
    assert tx.items[0].quantity == 1 and tx.items[0].unit_price == 5


def test_unknown_kind_and_bad_numbers_are_row_errors_without_values() -> None:
    compiled = CompiledMapping(load_mapping("square"), SQUARE_HEADER)
    with pytest.raises(RowError) as caught:
        compiled.kind(square_row(**{"Event Type": "4111111111111111"}))
    assert caught.value.field == "kind" and "4111" not in str(caught.value)
    with pytest.raises(RowError) as caught:
        compiled.build([square_row(), square_row(Qty="two")])
    assert (caught.value.field, caught.value.item) == ("items.1.quantity", 1)


def test_decimal_comma_and_mapping_by_path(tmp_path: Path) -> None:
    path = tmp_path / "till.yaml"
    path.write_text(
        "name: till\ndecimal: ','\ndelimiter: ';'\ncurrency: EUR\ntimezone: Europe/Paris\n"
        "timestamp_format: '%d.%m.%Y %H:%M'\n"
        "fields: {transaction_id: Bon, store_id: Filiale, occurred_at: Zeit, totals.total: Summe}\n"
    )
    mapping = load_mapping(str(path))
    compiled = CompiledMapping(mapping, ["Bon", "Filiale", "Zeit", "Summe"])
    document, _ = compiled.build([["B1", "F1", "02.11.2026 10:15", "1.234,50 €"]])
    tx = parse_transaction(document)
    assert tx.totals.total == Decimal("1234.50")
    assert tx.occurred_at == datetime(2026, 11, 2, 9, 15, tzinfo=UTC)


FIELDS = "fields: {transaction_id: a, store_id: b, occurred_at: c, totals.total: d"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "currency: EUR\nfields: {store_id: s, occurred_at: t, totals.total: x}\n",
            "transaction_id",
        ),
        ("fields: {transaction_id: a, store_id: b, occurred_at: c}\n", "currency"),
        (f"currency: EUR\ntimezone: Mars/Olympus\n{FIELDS}}}\n", "Mars"),
        (f"currency: EUR\n{FIELDS}, colour: e}}\n", "colour"),
        ("- just\n- a list\n", "YAML mapping"),
        ("fields: [unclosed\n", "cannot read"),
    ],
)
def test_bad_mappings_are_one_clear_error(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(MappingError) as caught:
        load_mapping(str(path))
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_item_without_a_price_is_refused_naming_it() -> None:
    header = ["transaction_id", "store_id", "occurred_at", "currency", "total", "item_name"]
    header.append("unit_price")
    compiled = CompiledMapping(load_mapping("generic"), header)
    first = ["T", "S", "2026-11-02T10:00:00Z", "EUR", "5", "Tea", "2"]
    rows = [first, ["T", "S", "", "", "", "Jam", ""]]
    document, item_rows = compiled.build(rows)
    with pytest.raises(ValidationError) as caught:
        parse_transaction(document)
    assert caught.value.field == "items.1.unit_price" and item_rows == [0, 1]


def test_unknown_mapping_name_lists_the_shipped_ones() -> None:
    with pytest.raises(MappingError, match="generic, square"):
        load_mapping("lightspeed")


def test_required_column_missing_from_the_file_is_a_mapping_error() -> None:
    with pytest.raises(MappingError, match="Transaction ID"):
        CompiledMapping(load_mapping("square"), ["Date", "Time", "Location"])


def test_a_card_number_right_after_a_multibyte_character_is_found() -> None:
    """Found by Schemathesis: the byte before the digits ended an "é" and the search
    raised (a 500) instead of reading it as a non-digit."""
    assert find_pan({"note": "é4111 1111 1111 1111"}) == "note"
    assert find_pan({"note": "中4111111111111111x"}) == "note"
    assert find_pan({"note": "é1234567890123"}) is None  # digits, but no Luhn match
