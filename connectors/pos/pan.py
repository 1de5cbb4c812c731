"""Card-number (PAN) detection: a raw card number must never reach the event log.

Why everywhere: a primary account number that lands in a CRM puts the whole hub in PCI DSS
scope, and it arrives where nobody planned it (a cashier's note, a customer-id column
mapped by mistake, an item name). So every string (and integer) of a transaction, item and
property, keys included, is searched for a run of 13-19 digits, possibly grouped by single
spaces or dashes, that passes the Luhn check.

Why the error never carries the value: the reason goes back to the client, into reject
files and possibly logs; echoing the number would leak exactly what we refuse to store.

Only numbers whose first digit is a payment industry's (ISO/IEC 7812 major industry
identifiers 1-6: airlines' UATP, Mastercard's 2-series, Amex/Diners/JCB, Visa, Mastercard
and Maestro, Discover/UnionPay) count: loyalty and gift card numbers starting 7, 8 or 9
(petroleum, telecom, national schemes), often Luhn-valid by design, are identifiers the hub
needs. Known trade-off: any other 13-19 digit number passes Luhn by chance one time in
ten, so a numeric id of that length starting 1-6 is refused now and then. One exemption
keeps barcodes usable:
an ``items[].sku`` of 13 or 14 plain digits with a valid GS1 check digit (EAN-13/GTIN-14)
is taken for a barcode, not a card.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import orjson

#: 13-19 ASCII digits, single spaces/dashes allowed between digits, not inside a longer
#: digit run and not after a ``+`` (a phone number in international form is not a card).
_CANDIDATE = re.compile(r"(?<![0-9+])[0-9](?:[ -]?[0-9]){12,18}(?![0-9])")
#: A cheap superset of the above (no backtracking): 13+ characters of digits, spaces and
#: dashes. The precise pattern costs ~25 times more on digit-rich text such as a receipt.
_ROUGH = re.compile(rb"[0-9][0-9 -]{11,}[0-9]")
_SEPARATORS = re.compile(r"[ -]")
_DOUBLED = tuple((2 * d) - 9 if d > 4 else 2 * d for d in range(10))
MIN_DIGITS, MAX_DIGITS = 13, 19
PAN_REASON = (
    "looks like a payment card number (PAN); send a card fingerprint or token, "
    "never the card number"
)


_PAYMENT_MII = frozenset("123456")


def looks_like_pan(digits: str) -> bool:
    """A payment card number's shape: 13-19 digits, a payment industry's first digit, Luhn."""
    return (
        MIN_DIGITS <= len(digits) <= MAX_DIGITS and digits[0] in _PAYMENT_MII and luhn_valid(digits)
    )


def luhn_valid(digits: str) -> bool:
    """True when ``digits`` (only 0-9) passes the Luhn (mod 10) check."""
    total = sum(map(int, digits[-1::-2]))
    total += sum(_DOUBLED[int(c)] for c in digits[-2::-2])
    return total % 10 == 0


def gtin_valid(digits: str) -> bool:
    """True when ``digits`` ends with a valid GS1 check digit (EAN-13, GTIN-14…)."""
    body, check = digits[:-1], int(digits[-1])
    weighted = sum(int(c) * (3 if i % 2 == 0 else 1) for i, c in enumerate(reversed(body)))
    return (10 - weighted % 10) % 10 == check


def _windows(match: str) -> Iterator[str]:
    """The digit strings a candidate may hide: whole, then runs of whole groups."""
    groups = _SEPARATORS.split(match)
    yield "".join(groups)
    if len(groups) > 1:
        for start in range(len(groups)):
            digits = ""
            for group in groups[start:]:
                digits += group
                if len(digits) > MAX_DIGITS:
                    break
                if len(digits) >= MIN_DIGITS:
                    yield digits


def contains_pan(text: str, *, barcode_ok: bool = False) -> bool:
    """True when ``text`` contains something that looks like a card number."""
    if len(text) < MIN_DIGITS or next(_rough_spans(text.encode()), None) is None:
        return False
    for match in _CANDIDATE.finditer(text):
        raw = match.group(0)
        if barcode_ok and raw.isdigit() and len(raw) in (13, 14) and gtin_valid(raw):
            continue
        if any(looks_like_pan(digits) for digits in _windows(raw)):
            return True
    return False


def _rough_spans(raw: bytes) -> Iterator[tuple[int, int]]:
    """Spans of 13+ digits mixed with spaces/dashes: the only places a candidate can be."""
    for rough in _ROUGH.finditer(raw):
        span = rough.group(0)
        if len(span) - span.count(b" ") - span.count(b"-") >= MIN_DIGITS:
            yield rough.span()


def may_hold_pan(cells: list[str]) -> bool:
    """Cheap test of raw text cells (a CSV row): ``False`` means no cell holds anything
    that could be a card number, so a document built from these cells need no search."""
    return next(_rough_spans("\x1f".join(cells).encode()), None) is not None


def find_pan(value: Any) -> str | None:
    """The dotted path of the first value that looks like a card number, else ``None``.

    Why two passes: almost nothing contains a card number, so the whole document is first
    serialized once and searched with one regular expression (a few microseconds); only
    when a candidate passes the Luhn check is the document walked to name the field (and
    to apply the barcode exemption, which needs to know the field).
    """
    try:
        text = orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS)
    except (TypeError, orjson.JSONEncodeError):
        return _walk(value, "")
    if not _any_luhn(text):
        return None
    return _walk(value, "")


def _any_luhn(raw: bytes) -> bool:
    """True when a candidate in ``raw`` passes Luhn; the precise pattern only runs on the
    rough spans (plus the character before each, for its look-behind)."""
    for start, end in _rough_spans(raw):
        # the byte before a span may end a multi-byte character: it reads as U+FFFD, a
        # non-digit, which is what the look-behind needs to know
        window = raw[max(start - 1, 0) : end].decode("utf-8", "replace")
        for match in _CANDIDATE.finditer(window):
            if any(looks_like_pan(digits) for digits in _windows(match.group(0))):
                return True
    return False


def _walk(value: Any, path: str) -> str | None:
    """Walk dicts (keys too), lists and tuples; check strings and integers.

    A key that looks like a card number is reported by its parent's path (the key itself
    must not be shown).
    """
    if isinstance(value, str):
        barcode_ok = path.startswith("items.") and path.endswith(".sku")
        return path or "body" if contains_pan(value, barcode_ok=barcode_ok) else None
    if isinstance(value, dict):
        for key, item in value.items():
            key_text = str(key)
            if contains_pan(key_text):
                return path or "body"
            found = _walk(item, f"{path}.{key_text}" if path else key_text)
            if found is not None:
                return found
        return None
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            found = _walk(item, f"{path}.{index}" if path else str(index))
            if found is not None:
                return found
        return None
    if isinstance(value, int | Decimal) and not isinstance(value, bool):
        return path or "body" if contains_pan(str(abs(value))) else None
    return None


__all__ = [
    "PAN_REASON",
    "contains_pan",
    "find_pan",
    "gtin_valid",
    "looks_like_pan",
    "luhn_valid",
    "may_hold_pan",
]
