"""Reading headers of real-world mail: decoded when possible, raw when not; JSON-safe text.

Why a raw fallback: the stdlib's header parser raises on some hostile input (odd address
syntax, broken encoded words); the raw text is still better than losing the header, and
``clean_text`` makes any of it storable (no lone surrogates, no NUL, which PostgreSQL's
jsonb refuses).
"""

from __future__ import annotations

import re
from email import policy
from email.message import Message
from email.parser import BytesHeaderParser
from email.utils import getaddresses

from pipeline.identifiers import normalize_email

MAX_HEADER_BYTES = 64 * 1024
MAX_RECIPIENTS = 100
MAX_REFERENCES = 50
_MSGID = re.compile(r"<([^<>\s]+)>")
#: A lone surrogate (what surrogateescape makes of undecodable bytes); searched in C, as
#: a Python loop over each character took 11 s on a 50 MB body
_SURROGATE = re.compile("[\ud800-\udfff]")


def header_text(message: Message, name: str) -> str | None:
    """A header's decoded value; its raw text if the header cannot be parsed."""
    try:
        value = message.get(name)
        if value is not None:
            return clean_text(str(value))
    except Exception:
        return raw_header(message, name)
    return None


def raw_header(message: Message, name: str) -> str | None:
    """A header's text exactly as it came (first of that name), made JSON-safe."""
    wanted = name.lower()
    for key, value in message.raw_items():  # type: ignore[attr-defined]
        if key.lower() == wanted:
            return clean_text(str(value))
    return None


def addresses(message: Message, name: str) -> list[tuple[str, str]]:
    """(display name, address) pairs of every ``name`` header, raw-parsed on failure."""
    pairs: list[tuple[str, str]] = []
    try:
        for header in message.get_all(name) or []:
            for address in getattr(header, "addresses", ()):
                pairs.append((clean_text(address.display_name), clean_text(address.addr_spec)))
    except Exception:
        raw = raw_header(message, name)
        pairs = [(clean_text(n), clean_text(a)) for n, a in getaddresses([raw])] if raw else []
    return [(n, a.strip("<> ")) for n, a in pairs if a.strip("<> ")]


def recipients(message: Message, name: str) -> list[str]:
    return [usable_address(a) or a[:256] for _, a in addresses(message, name)][:MAX_RECIPIENTS]


def usable_address(address: str) -> str | None:
    try:
        return normalize_email(address) if address else None
    except ValueError:
        return None


def clean_text(text: str) -> str:
    """Text safe for JSON on both databases: no lone surrogates, no NUL."""
    if _SURROGATE.search(text):
        try:
            text = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        except UnicodeError:
            text = text.encode("utf-8", "replace").decode("utf-8")
    return text.replace("\x00", "")


def normalize_message_id(value: str | None) -> str | None:
    """``<abc@host>`` -> ``abc@host``; None when there is no usable id."""
    if not value:
        return None
    found = _MSGID.search(value)
    text = found.group(1) if found else value.strip().strip("<>").strip()
    if not text or any(ch.isspace() for ch in text):
        return None
    return clean_text(text)[:998]


def reference_ids(value: str | None) -> list[str]:
    """The message ids of a ``References`` header, oldest (the thread root) first."""
    if not value:
        return []
    found = _MSGID.findall(value)
    ids = found or [part.strip("<>") for part in value.split()]
    return [clean_text(mid) for mid in ids if mid][: MAX_REFERENCES * 4]


# -- what a failure row keeps ---------------------------------------------------------------


def header_block(raw: bytes, limit: int = MAX_HEADER_BYTES) -> str:
    """The header section of a message (up to the first blank line), capped, as text."""
    ends = [i for i in (raw.find(b"\r\n\r\n"), raw.find(b"\n\n")) if i >= 0]
    head = raw[: min(ends)] if ends else raw
    return clean_text(head[:limit].decode("utf-8", errors="replace"))


def header_message_id(raw: bytes) -> str | None:
    """The normalized Message-ID of a message or header section, if it has one."""
    try:
        headers = BytesHeaderParser(policy=policy.default).parsebytes(raw[:MAX_HEADER_BYTES])
        return normalize_message_id(header_text(headers, "Message-ID"))
    except Exception:
        return None
