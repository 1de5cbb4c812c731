"""Identifier normalization: one spelling per real-world identifier.

Why here, in the pipeline: the event log stores identifiers already normalized, so every
consumer (identity resolution, lookups, rules) compares like with like and nothing
downstream needs to know how a connector spelled a phone number.
"""

from __future__ import annotations

import re
from functools import lru_cache

import phonenumbers

from pipeline.errors import ValidationError

#: The kinds the hub knows. Any other kind matching ``CUSTOM_KIND_RE`` is accepted as-is
#: (trimmed), so a business can add its own (``membership_no``) without a code change.
KNOWN_KINDS = (
    "user_id",
    "customer_id",
    "email",
    "phone",
    "loyalty_card",
    "anonymous_id",
    "device_id",
)
CUSTOM_KIND_RE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
MAX_VALUE_LENGTH = 256


def normalize_email(value: str) -> str:
    """Trim and case-fold an address; reject what cannot be an address."""
    email = value.strip().casefold()
    if not _EMAIL_RE.match(email):
        raise ValueError(f"not an email address: {value!r}")
    return email


@lru_cache(maxsize=65536)
def normalize_phone(value: str, default_region: str) -> str:
    """E.164 (``+14155550123``); numbers without a country code use ``default_region``."""
    try:
        number = phonenumbers.parse(value, default_region)
    except phonenumbers.NumberParseException as exc:
        raise ValueError(f"not a phone number: {value!r} ({exc})") from None
    if not phonenumbers.is_possible_number(number):
        raise ValueError(f"not a possible phone number: {value!r}")
    e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    if len(e164) > 16:  # E.164: at most 15 digits after the +
        raise ValueError(f"not a phone number: {value!r} (over 15 digits)")
    # Leading zeros a country does not keep ("000000" in DE: +4900000) make an E.164 text
    # that reads back as another number; such a key would not be stable (found by Hypothesis).
    again = phonenumbers.parse(e164, None)
    if phonenumbers.format_number(again, phonenumbers.PhoneNumberFormat.E164) != e164:
        raise ValueError(f"not a usable phone number: {value!r} (leading zeros)")
    return e164


def normalize_identifier(kind: str, value: object, default_region: str) -> str:
    """Normalize one identifier; raise ``ValueError`` saying why it is unusable."""
    if type(value) is not str:
        if not CUSTOM_KIND_RE.match(kind):
            raise _bad_kind(kind)
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise ValueError(f"identifier value must be a string, got {type(value).__name__}")
        value = str(value)
    return _normalize_text(kind, value, default_region)


# Why cached: the same customers' ids arrive again and again (every event of a session
# carries the user's id), and checking and normalizing one costs microseconds. Only text
# is cached (not ints, which would share entries with bools); errors are not cached.
@lru_cache(maxsize=65536)
def _normalize_text(kind: str, value: str, default_region: str) -> str:
    if not CUSTOM_KIND_RE.match(kind):
        raise _bad_kind(kind)
    text = value.strip()
    if not text:
        raise ValueError("identifier value is empty")
    if len(text) > MAX_VALUE_LENGTH:
        raise ValueError(f"identifier value longer than {MAX_VALUE_LENGTH} characters")
    if kind == "email":
        return normalize_email(text)
    if kind == "phone":
        return normalize_phone(text, default_region)
    return text


def _bad_kind(kind: str) -> ValueError:
    return ValueError(f"identifier kind must match {CUSTOM_KIND_RE.pattern}, got {kind!r}")


def normalize_identifiers(
    identifiers: dict[str, object], default_region: str, *, field: str = "identifiers"
) -> dict[str, str]:
    """Normalize every identifier; the first unusable one raises ``ValidationError``."""
    out: dict[str, str] = {}
    for kind, value in identifiers.items():
        try:
            out[kind] = normalize_identifier(kind, value, default_region)
        except ValueError as exc:
            raise ValidationError(f"{field}.{kind}", str(exc)) from None
    return out


def lenient_identifiers(candidates: dict[str, object], default_region: str) -> dict[str, str]:
    """Normalize identifiers a connector found in free-form data (e.g. ``traits.email``).

    Unlike explicit identifiers these are hints: an unusable one is skipped, not a reason
    to refuse the event (it stays in the traits as the customer wrote it).
    """
    out: dict[str, str] = {}
    for kind, value in candidates.items():
        if value is None:
            continue
        try:
            out[kind] = normalize_identifier(kind, value, default_region)
        except ValueError:
            continue
    return out
