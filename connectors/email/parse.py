"""One raw RFC 5322 message (bytes) into one ``email.received`` touchpoint. Pure.

Why so defensive: mail is written by every program ever made. Headers in unknown charsets,
8-bit bytes where none belong, broken MIME boundaries and unparsable dates are daily
traffic, and one of them must never stop a mailbox. So every header is read with a
fallback to its raw text, text is decoded with ``errors="replace"`` when the declared
charset is unknown, and a message is refused (:class:`UnusableMessage`) only when nothing
sensible can be made of it: no usable sender, or a structure the parser chokes on.

Why the flags: rules must never answer a robot. ``auto_reply`` (RFC 3834
``Auto-Submitted``, ``Precedence``, ``X-Autoreply``), ``bulk`` (mailing lists,
newsletters) and ``bounce`` (delivery status notifications, RFC 3464) are set once, for
every message (see ``connectors.email.automation``), and ``automated`` says "any of them".

Why a bounce is filed under the failed recipient: a DSN's sender is a mailer daemon, and
filing it there would grow one junk profile collecting every bounce; the event is about
the customer whose address failed, so that address is its identifier (the daemon's
address stays in ``properties.from``).
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.feedparser import BytesFeedParser
from email.message import EmailMessage, Message
from email.policy import EmailPolicy
from typing import Any

from connectors.email.automation import STATUS_PARTS, automation_flags, delivery_report
from connectors.email.headers import (
    MAX_REFERENCES,
    addresses,
    clean_text,
    header_text,
    normalize_message_id,
    recipients,
    reference_ids,
    usable_address,
)
from pipeline.envelope import Channel, Touchpoint, utcnow
from pipeline.errors import PermanentError

MAX_TEXT_CHARS = 16_000
#: HTML beyond this is cut before conversion: the text is capped far below anyway, and
#: inscriptis (pure Python) takes about 2 ms per KB of table-heavy newsletter HTML
MAX_HTML_CHARS = 256 * 1024
#: A body is cleaned and tidied from at most this many decoded characters (far more than
#: the MAX_TEXT_CHARS kept): each step copies the text, so a 50 MB body cost seconds and
#: hundreds of MB for 16,000 characters of result
MAX_BODY_CHARS = 1024 * 1024
MAX_ATTACHMENTS = 100
MAX_PARTS = 1_000
MAX_DEPTH = 25
MAX_SUBJECT_CHARS = 998
#: Parts the parser may build for one message (those of attached messages and delivery
#: reports included). Why while parsing, not after: the stdlib parser reads every part's
#: headers again and again (about 0.3 ms a part), so 25 MB of tiny parts (millions of
#: them) would take minutes before :data:`MAX_PARTS` is ever checked.
MAX_PARSED_PARTS = 2 * MAX_PARTS
#: Header lines the parser may read for one message, all its parts together (a real one
#: has a few dozen, ten a part at most). Why: each is a Python object scanned by every
#: lookup of a header, so 25 MB of ``X: a`` lines (4 million) took 17 s.
MAX_HEADERS = 10 * MAX_PARSED_PARTS
#: Characters of one header value the structured header parser is given (the rest is
#: dropped). Why: that parser re-slices the rest of a header at each token, so a header
#: of n characters costs up to n² steps: 4,000 commas in a ``To:`` take 0.16 s, 64 KiB of
#: them a minute. 8 Ki characters hold far more than the 100 recipients and 50
#: references kept, and any real ``Content-Type``.
MAX_HEADER_CHARS = 8 * 1024
#: Seconds one message may take to parse before it is refused. Why a clock as well as
#: the limits above: they bound each step, not how many slow steps a message can hold
#: (2,000 parts, each with its own long and hostile ``Content-Type``); real mail, even
#: 25 MB of it, reads in well under a second, so this is a backstop, never a judgement.
MAX_PARSE_SECONDS = 10.0
#: Bytes handed to the parser at a time: feeding it the whole message at once makes it
#: hold several copies (one in 4-byte characters); by pieces it holds about two.
_FEED_BYTES = 1 << 16
#: Writes headers as they came: refolding would run each through the slow parser again
_AS_WRITTEN = EmailPolicy(refold_source="none")
EVENT_TYPE = "email.received"
SOURCE = "imap"
_MAX_MESSAGE_ID = 255

_BLANK_LINES = re.compile(r"\n{3,}")
_TAGS = re.compile(r"<[^>]*>")
_BODY_TYPES = frozenset({"text/plain", "text/html"})
_REPORT_PARTS = STATUS_PARTS | {"text/rfc822-headers"}


class UnusableMessage(PermanentError):
    """Nothing sensible can be made of this message; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class MessageSource:
    """Where a message was read: the touchpoint's ``context``."""

    mailbox: str
    folder: str
    uidvalidity: int
    uid: int

    def as_context(self) -> dict[str, Any]:
        return {
            "mailbox": self.mailbox,
            "folder": self.folder,
            "uidvalidity": self.uidvalidity,
            "uid": self.uid,
        }


def parse_message(
    raw: bytes,
    source: MessageSource,
    *,
    internal_date: datetime | None = None,
    size: int | None = None,
    received_at: datetime | None = None,
) -> Touchpoint:
    """The ``email.received`` touchpoint of ``raw``, or :class:`UnusableMessage`.

    ``internal_date`` (the server's arrival time, IMAP INTERNALDATE) stands in for a
    missing or unparsable ``Date`` header.
    """
    received = received_at or utcnow()
    try:
        message = _parse(raw)
        return _touchpoint(message, raw, source, internal_date, size, received)
    except UnusableMessage:
        raise
    except RecursionError:
        raise UnusableMessage("the MIME structure is nested too deeply to read") from None
    except Exception as exc:  # the stdlib parser has many ways to fail on hostile input
        reason = f"cannot parse the message ({type(exc).__name__}: {clean_text(str(exc))[:200]})"
        raise UnusableMessage(reason) from None


class _Part(EmailMessage):
    """A part that knows how deep it is, so nesting is refused as it is read."""

    depth = 0

    def attach(self, payload: Any) -> None:
        depth = self.depth + 1
        if depth > MAX_DEPTH:
            raise UnusableMessage(f"the MIME structure is over {MAX_DEPTH} deep")
        payload.depth = depth
        super().attach(payload)


class _Reading:
    """What reading one message has used up: parts built, time, headers parsed once."""

    def __init__(self) -> None:
        self.parts = 0
        self.header_lines = 0
        self.deadline = time.monotonic() + MAX_PARSE_SECONDS
        self.headers: dict[tuple[str, str], Any] = {}

    def new_part(self, policy: Any) -> _Part:
        self.parts += 1
        if self.parts > MAX_PARSED_PARTS:
            raise UnusableMessage(f"the MIME structure has over {MAX_PARSED_PARTS} parts")
        self.on_time()
        return _Part(policy=policy)

    def on_time(self) -> None:
        if time.monotonic() > self.deadline:
            raise UnusableMessage(f"the message takes over {MAX_PARSE_SECONDS:g} s to read")


class _Policy(EmailPolicy):
    """``policy.default`` (EmailMessage objects: get_body, iter_parts, get_content) with
    the limits of :class:`_Reading`; each header value is parsed once, not per access."""

    reading: _Reading | None = None

    def __init__(self, reading: _Reading) -> None:
        super().__init__(message_factory=reading.new_part)
        object.__setattr__(self, "reading", reading)  # policies are read-only once made

    def header_source_parse(self, sourcelines: list[str]) -> tuple[str, str]:
        reading = self.reading
        if reading is not None:
            reading.header_lines += 1
            if reading.header_lines > MAX_HEADERS:
                raise UnusableMessage(f"the message has over {MAX_HEADERS} header lines")
        return super().header_source_parse(sourcelines)

    def header_fetch_parse(self, name: str, value: str) -> Any:
        reading = self.reading
        if reading is None or hasattr(value, "name"):
            return super().header_fetch_parse(name, value)
        reading.on_time()
        key = (name, value)
        header = reading.headers.get(key)
        if header is None:
            header = super().header_fetch_parse(name, value[:MAX_HEADER_CHARS])
            reading.headers[key] = header
        return header


def _parse(raw: bytes) -> EmailMessage:
    """The message tree of ``raw``, read within the limits above (or UnusableMessage)."""
    reading = _Reading()
    parser = BytesFeedParser(policy=_Policy(reading))
    view = memoryview(raw)
    for start in range(0, len(raw), _FEED_BYTES):
        parser.feed(bytes(view[start : start + _FEED_BYTES]))
        reading.on_time()
    message = parser.close()
    assert isinstance(message, EmailMessage)
    return message


def _touchpoint(
    message: EmailMessage,
    raw: bytes,
    source: MessageSource,
    internal_date: datetime | None,
    size: int | None,
    received: datetime,
) -> Touchpoint:
    own_id = normalize_message_id(header_text(message, "Message-ID"))
    in_reply_to = normalize_message_id(header_text(message, "In-Reply-To"))
    references = reference_ids(header_text(message, "References"))
    senders = addresses(message, "From") or addresses(message, "Sender")
    sender_name, sender = senders[0] if senders else ("", "")
    flags = automation_flags(message, sender)
    report = delivery_report(message)
    bounce = flags["bounce"] or bool(report and report.get("action") == "failed")
    flags["bounce"] = bounce
    flags["automated"] = any(flags.values())

    identifier = usable_address(sender)
    traits: dict[str, Any] = {}
    failed_recipient = usable_address(report.get("recipient", "")) if report else None
    if bounce and failed_recipient:
        identifier = failed_recipient  # see the module docstring
    elif identifier and sender_name.strip():
        traits["name"] = clean_text(sender_name).strip()[:200]
    if identifier is None:
        shown = f" ({clean_text(sender)[:100]!r})" if sender else ""
        raise UnusableMessage(f"no usable From address{shown}")

    text, body_format, cut = body_text(message)
    truncated = cut or len(text) > MAX_TEXT_CHARS
    attachments = list(attachment_info(message))
    message_id = touchpoint_message_id(own_id, raw)
    properties: dict[str, Any] = {
        "subject": clean_text(header_text(message, "Subject") or "").strip()[:MAX_SUBJECT_CHARS],
        "from": usable_address(sender) or clean_text(sender),
        "to": recipients(message, "To"),
        "cc": recipients(message, "Cc"),
        "text": text[:MAX_TEXT_CHARS],
        "text_truncated": truncated,
        "body_format": body_format,
        "attachments": attachments[:MAX_ATTACHMENTS],
        "attachment_count": len(attachments),
        "email_message_id": own_id,
        "in_reply_to": in_reply_to,
        "references": references[:MAX_REFERENCES],
        "conversation_id": references[0] if references else in_reply_to or own_id or message_id,
        **flags,
    }
    reply_to = recipients(message, "Reply-To")
    if reply_to:
        properties["reply_to"] = reply_to
    if report:
        properties["delivery_status"] = report
    if size is not None:
        properties["size"] = size
    if message.defects:
        properties["mime_defects"] = len(message.defects)
    return Touchpoint(
        message_id=message_id,
        channel=Channel.EMAIL,
        type=EVENT_TYPE,
        occurred_at=_occurred_at(message, internal_date, received),
        received_at=received,
        source=SOURCE,
        identifiers={"email": identifier},
        traits=traits,
        properties=properties,
        context=source.as_context(),
    )


# -- ids and threading ----------------------------------------------------------------------


def touchpoint_message_id(own_id: str | None, raw: bytes) -> str:
    """``email:<Message-ID>``; without one, a digest of the bytes (stable across resyncs)."""
    if own_id:
        candidate = f"email:{own_id}"
        if len(candidate) <= _MAX_MESSAGE_ID:
            return candidate
        return "email:sha256:" + hashlib.sha256(own_id.encode()).hexdigest()
    return "email:nomid:" + hashlib.sha256(raw).hexdigest()[:48]


# -- body and attachments -------------------------------------------------------------------


def body_text(message: EmailMessage) -> tuple[str, str, bool]:
    """The readable text (plain preferred, HTML converted), which it came from, and
    whether the body was longer than what was read of it (MAX_BODY_CHARS)."""
    part = message.get_body(preferencelist=("plain", "html"))
    if part is None:
        return "", "none", False
    content, cut = _decoded_text(part, MAX_BODY_CHARS)
    if part.get_content_subtype() == "html":
        return _tidy(html_to_text(content[:MAX_HTML_CHARS])), "html", cut
    return _tidy(content), "plain", cut


def html_to_text(html: str) -> str:
    """HTML as readable text (inscriptis keeps tables and lists legible)."""
    if not html.strip():
        return ""
    try:
        from inscriptis import get_text

        return str(get_text(html))
    except Exception:  # lxml refuses some garbage; a crude strip beats losing the text
        return _TAGS.sub(" ", html)


def _decoded_text(part: Message, limit: int) -> tuple[str, bool]:
    """The part's text, cut to ``limit`` characters, and whether it was cut."""
    try:
        content = part.get_content()  # type: ignore[attr-defined]
        if isinstance(content, str):
            return clean_text(content[:limit]), len(content) > limit
    except (LookupError, UnicodeError, ValueError, AssertionError):
        pass  # unknown charset or broken transfer encoding: decode by hand below
    payload = part.get_payload(decode=True)
    data = payload if isinstance(payload, bytes) else b""
    charset = part.get_content_charset() or "utf-8"
    try:
        text = data.decode(charset, errors="replace")
    except LookupError:
        text = data.decode("utf-8", errors="replace")
    return clean_text(text[:limit]), len(text) > limit


def attachment_info(message: EmailMessage) -> Iterator[dict[str, Any]]:
    """Name, type and decoded size of each attachment; the content is never kept."""
    for part in _leaves(message, 0, [0]):
        content_type = part.get_content_type()
        if content_type in _REPORT_PARTS:
            continue
        try:
            filename = part.get_filename()
        except Exception:
            filename = None
        disposition = (part.get_content_disposition() or "").lower()
        if not filename and disposition != "attachment" and content_type in _BODY_TYPES:
            continue  # a body part (or its alternative)
        yield {
            "filename": clean_text(filename)[:255] if filename else None,
            "content_type": clean_text(content_type),  # a NUL here broke jsonb
            "size": _part_size(part),
        }


def _leaves(part: Message, depth: int, seen: list[int]) -> Iterator[Message]:
    """Leaf parts, a forwarded message (message/rfc822) counting as one leaf."""
    seen[0] += 1
    if depth > MAX_DEPTH or seen[0] > MAX_PARTS:
        raise UnusableMessage(f"the MIME structure is over {MAX_DEPTH} deep or {MAX_PARTS} parts")
    if part.get_content_maintype() == "multipart":
        payload = part.get_payload()
        for sub in payload if isinstance(payload, list) else []:
            if isinstance(sub, Message):
                yield from _leaves(sub, depth + 1, seen)
        return
    yield part


def _part_size(part: Message) -> int:
    try:
        if part.get_content_maintype() == "message":
            return len(part.as_bytes(policy=_AS_WRITTEN))
        payload = part.get_payload(decode=True)
        return len(payload) if isinstance(payload, bytes) else 0
    except Exception:
        return 0


def _tidy(text: str) -> str:
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")]
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()


def _occurred_at(message: Message, internal: datetime | None, received: datetime) -> datetime:
    """``Date`` if it parses and is not in the future; else INTERNALDATE; else now."""
    try:
        header = message.get("Date")
        value = getattr(header, "datetime", None) if header is not None else None
        if isinstance(value, datetime):
            value = value if value.tzinfo else value.replace(tzinfo=UTC)
            value = value.astimezone(UTC)
            if value <= received + timedelta(days=1):
                return value
    except Exception:  # noqa: S110 (a bad Date header must not fail the message)
        pass
    if internal is not None:
        return internal if internal.tzinfo else internal.replace(tzinfo=UTC)
    return received
