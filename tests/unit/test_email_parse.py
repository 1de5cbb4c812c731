"""connectors.email.parse: raw messages -> email.received touchpoints (pure, no server)."""

from __future__ import annotations

from datetime import UTC, datetime
from email.message import EmailMessage

import orjson
import pytest

from connectors.email.headers import (
    header_block,
    header_message_id,
    normalize_message_id,
    reference_ids,
)
from connectors.email.parse import MAX_TEXT_CHARS, MessageSource, UnusableMessage, parse_message
from pipeline import Touchpoint
from pipeline.identifiers import normalize_identifiers

SOURCE = MessageSource(mailbox="support", folder="INBOX", uidvalidity=77, uid=5)
RECEIVED = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def parse(raw: bytes, **kwargs: object) -> Touchpoint:
    return parse_message(raw, SOURCE, received_at=RECEIVED, **kwargs)  # type: ignore[arg-type]


def crlf(text: str) -> bytes:
    return text.strip("\n").replace("\n", "\r\n").encode() + b"\r\n"


PLAIN = crlf("""
From: =?utf-8?q?Zo=C3=AB_Martin?= <Zoe.Martin@Example.COM>
To: Support <support@shop.example>, sales@shop.example
Cc: boss@shop.example
Subject: =?utf-8?q?Where_is_my_order_=E2=84=96_42=3F?=
Date: Mon, 23 Nov 2026 09:15:00 +0100
Message-ID: <CAF=abc123@mail.example.com>
Content-Type: text/plain; charset=utf-8

Hello,

my order has not arrived.


Zoë
""")


def test_plain_message_becomes_an_email_received_touchpoint() -> None:
    touchpoint = parse(PLAIN, size=len(PLAIN))
    assert touchpoint.message_id == "email:CAF=abc123@mail.example.com"
    assert touchpoint.channel.value == "email"
    assert touchpoint.type == "email.received"
    assert touchpoint.source == "imap"
    assert touchpoint.occurred_at == datetime(2026, 11, 23, 8, 15, tzinfo=UTC)
    assert touchpoint.received_at == RECEIVED
    assert normalize_identifiers(touchpoint.identifiers, "US") == {
        "email": "zoe.martin@example.com"
    }
    assert touchpoint.traits == {"name": "Zoë Martin"}
    props = touchpoint.properties
    assert props["subject"] == "Where is my order № 42?"
    assert props["from"] == "zoe.martin@example.com"
    assert props["to"] == ["support@shop.example", "sales@shop.example"]
    assert props["cc"] == ["boss@shop.example"]
    assert props["text"] == "Hello,\n\nmy order has not arrived.\n\nZoë"
    assert props["text_truncated"] is False
    assert props["body_format"] == "plain"
    assert props["attachments"] == []
    assert props["email_message_id"] == "CAF=abc123@mail.example.com"
    assert props["conversation_id"] == "CAF=abc123@mail.example.com"
    assert props["size"] == len(PLAIN)
    assert not any(props[flag] for flag in ("auto_reply", "bulk", "bounce", "automated"))
    assert touchpoint.context == {
        "mailbox": "support",
        "folder": "INBOX",
        "uidvalidity": 77,
        "uid": 5,
    }
    orjson.dumps(touchpoint.model_dump(mode="json"))  # storable as JSON


def test_html_only_message_is_converted_to_text() -> None:
    message = EmailMessage()
    message["From"] = "shop@brand.example"
    message["Subject"] = "Newsletter"
    message["Message-ID"] = "<n1@brand.example>"
    message["List-Unsubscribe"] = "<mailto:unsub@brand.example>"
    message.set_content(
        "<html><head><style>p{color:red}</style></head><body><h1>Sale</h1>"
        "<p>Up to <b>50%</b> off</p><ul><li>Shoes</li><li>Hats</li></ul></body></html>",
        subtype="html",
    )
    touchpoint = parse(message.as_bytes())
    props = touchpoint.properties
    assert props["body_format"] == "html"
    assert "Sale" in props["text"] and "Up to 50% off" in props["text"]
    assert "* Shoes" in props["text"] and "<" not in props["text"]
    assert "color:red" not in props["text"]
    assert props["bulk"] is True and props["automated"] is True
    assert props["auto_reply"] is False


def test_multipart_with_attachments_keeps_metadata_never_content() -> None:
    message = EmailMessage()
    message["From"] = "Ann <ann@example.org>"
    message["To"] = "support@shop.example"
    message["Subject"] = "Invoice"
    message["Message-ID"] = "<inv@example.org>"
    message.set_content("Plain body")
    message.add_alternative("<p>HTML body</p>", subtype="html")
    message.add_attachment(
        b"%PDF-1.4 " + b"x" * 1000, maintype="application", subtype="pdf", filename="invoice.pdf"
    )
    message.add_attachment(
        b"\x89PNG" + b"\0" * 200, maintype="image", subtype="png", filename="photo été.png"
    )
    forwarded = EmailMessage()
    forwarded["From"] = "x@y.example"
    forwarded.set_content("inner")
    message.add_attachment(forwarded)
    touchpoint = parse(message.as_bytes())
    props = touchpoint.properties
    assert props["text"] == "Plain body"
    assert props["body_format"] == "plain"
    assert props["attachments"][:2] == [
        {"filename": "invoice.pdf", "content_type": "application/pdf", "size": 1009},
        {"filename": "photo été.png", "content_type": "image/png", "size": 204},
    ]
    inner = props["attachments"][2]
    assert inner["content_type"] == "message/rfc822" and inner["size"] > 0
    assert props["attachment_count"] == 3
    assert "PDF-1.4" not in orjson.dumps(touchpoint.model_dump(mode="json")).decode()


def test_unknown_charsets_are_decoded_with_replacement() -> None:
    raw = (
        b"From: =?x-klingon?q?J=E9r=F4me?= <jerome@example.com>\r\n"
        b"Subject: caf\xe9 \xff\xfe\r\n"
        b"Message-ID: <cs@example.com>\r\n"
        b"Content-Type: text/plain; charset=x-klingon\r\n"
        b"Content-Transfer-Encoding: 8bit\r\n\r\n"
        b"Bonjour \xe9t\xe9 \xc3\xa9t\xc3\xa9\x00 fin\r\n"
    )
    touchpoint = parse(raw)
    props = touchpoint.properties
    assert props["text"] == "Bonjour \ufffdt\ufffd été fin"
    assert props["subject"].startswith("caf")
    assert touchpoint.identifiers == {"email": "jerome@example.com"}
    document = orjson.dumps(touchpoint.model_dump(mode="json")).decode()
    assert "\\u0000" not in document  # PostgreSQL jsonb refuses NUL


def test_malformed_mime_is_read_as_far_as_possible() -> None:
    raw = crlf("""
From: broken@example.com
Message-ID: <broken@example.com>
Subject: broken boundary
Content-Type: multipart/mixed; boundary="XYZ"

--XYZ
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: base64

SGVsbG8gd29ybGQ=!!!not-base64
--XYZ
Content-Type: application/octet-stream; name="data.bin"
Content-Transfer-Encoding: base64

AAAA
""")  # the closing boundary is missing, base64 is damaged
    touchpoint = parse(raw)
    props = touchpoint.properties
    assert props["text"].startswith("Hello world")
    assert props["attachments"] == [
        {"filename": "data.bin", "content_type": "application/octet-stream", "size": 3}
    ]
    assert props["mime_defects"] >= 1


def test_without_a_usable_sender_the_message_is_refused() -> None:
    for headers in ("From: undisclosed-recipients:;", "From: Just A Name", "Subject: no from"):
        raw = crlf(f"{headers}\nMessage-ID: <x@y.z>\n\nbody")
        with pytest.raises(UnusableMessage, match="no usable From address"):
            parse(raw)


def test_sender_header_stands_in_for_a_missing_from() -> None:
    raw = crlf("Sender: agent@example.net\nMessage-ID: <s@y.z>\n\nbody")
    assert parse(raw).identifiers == {"email": "agent@example.net"}


def test_deep_nesting_is_refused_not_crashing() -> None:
    depth = 60
    lines = ["From: deep@example.com", "Message-ID: <deep@example.com>"]
    for level in range(depth):
        lines += [f'Content-Type: multipart/mixed; boundary="b{level}"', "", f"--b{level}"]
    lines += ["Content-Type: text/plain", "", "bottom"]
    with pytest.raises(UnusableMessage, match=r"nested|deep"):
        parse(crlf("\n".join(lines)))


@pytest.mark.parametrize(
    "header",
    [
        "Auto-Submitted: auto-replied",
        "Auto-Submitted: auto-generated; owner-email=x@y.z",
        "Precedence: auto_reply",
        "Precedence: junk",
        "X-Autoreply: yes",
        "X-Autorespond: Out of office",
    ],
)
def test_auto_replies_are_flagged(header: str) -> None:
    raw = crlf(f"From: Zoe <zoe@example.com>\nMessage-ID: <ooo@example.com>\n{header}\n\nAway")
    props = parse(raw).properties
    assert props["auto_reply"] is True and props["automated"] is True


def test_auto_submitted_no_is_a_human() -> None:
    raw = crlf("From: zoe@example.com\nMessage-ID: <h@example.com>\nAuto-Submitted: no\n\nHi")
    props = parse(raw).properties
    assert props["auto_reply"] is False and props["automated"] is False


DSN = crlf("""
From: Mail Delivery System <MAILER-DAEMON@mx.shop.example>
To: care@shop.example
Subject: Undelivered Mail Returned to Sender
Message-ID: <dsn-1@mx.shop.example>
Date: Mon, 23 Nov 2026 10:00:00 +0000
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="RPT"

--RPT
Content-Type: text/plain

I'm sorry to have to inform you that your message could not be delivered.

--RPT
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.shop.example
Arrival-Date: Mon, 23 Nov 2026 09:59:58 +0000

Final-Recipient: rfc822; Gone.Customer@Example.net
Original-Recipient: rfc822;gone.customer@example.net
Action: failed
Status: 5.1.1
Diagnostic-Code: smtp; 550 5.1.1 <gone.customer@example.net>:
 Recipient address rejected: User unknown

--RPT
Content-Type: text/rfc822-headers

From: care@shop.example
To: gone.customer@example.net
Subject: Your order
Message-ID: <our-1@shop.example>

--RPT--
""")


def test_dsn_bounce_is_flagged_and_filed_under_the_failed_recipient() -> None:
    touchpoint = parse(DSN)
    props = touchpoint.properties
    assert props["bounce"] is True and props["automated"] is True
    assert props["delivery_status"] == {
        "recipient": "gone.customer@example.net",
        "action": "failed",
        "status": "5.1.1",
        "diagnostic": "smtp; 550 5.1.1 <gone.customer@example.net>: "
        "Recipient address rejected: User unknown",
    }
    assert touchpoint.identifiers == {"email": "gone.customer@example.net"}
    assert touchpoint.traits == {}  # "Mail Delivery System" is nobody's name
    assert props["from"] == "mailer-daemon@mx.shop.example"
    assert props["attachments"] == []  # the report parts are not attachments


def test_delay_notification_is_not_a_bounce() -> None:
    delayed = DSN.replace(b"Action: failed", b"Action: delayed").replace(
        b"From: Mail Delivery System <MAILER-DAEMON@mx.shop.example>",
        b"From: relay@mx.shop.example",
    )
    props = parse(delayed).properties
    assert props["bounce"] is False
    assert props["delivery_status"]["action"] == "delayed"
    assert props["auto_reply"] is True  # still a robot


def test_old_style_bounce_from_postmaster_is_flagged() -> None:
    raw = crlf("From: postmaster@mx.example\nMessage-ID: <pm@mx.example>\n\nundeliverable")
    props = parse(raw).properties
    assert props["bounce"] is True and props["automated"] is True


def test_threading_ids_give_the_conversation_root() -> None:
    reply = crlf("""
From: zoe@example.com
Message-ID: <r3@example.com>
In-Reply-To: <r2@shop.example>
References: <root@example.com>
 <r1@shop.example> <r2@shop.example>

thanks
""")
    props = parse(reply).properties
    assert props["in_reply_to"] == "r2@shop.example"
    assert props["references"] == ["root@example.com", "r1@shop.example", "r2@shop.example"]
    assert props["conversation_id"] == "root@example.com"
    only_reply_to = crlf("From: z@example.com\nMessage-ID: <a@b.c>\nIn-Reply-To: <p@b.c>\n\nx")
    assert parse(only_reply_to).properties["conversation_id"] == "p@b.c"


def test_message_ids_are_normalized_and_missing_ones_get_a_content_digest() -> None:
    assert normalize_message_id("  <abc@host>  ") == "abc@host"
    assert normalize_message_id("abc@host") == "abc@host"
    assert normalize_message_id("<>") is None
    assert normalize_message_id("not an id") is None
    assert reference_ids("<a@b> <c@d>\r\n <e@f>") == ["a@b", "c@d", "e@f"]
    raw = crlf("From: z@example.com\nSubject: no id\n\nbody")
    first, again = parse(raw), parse_message(raw, MessageSource("other", "Support", 1, 99))
    assert first.message_id.startswith("email:nomid:")
    assert first.message_id == again.message_id  # stable across folders and resyncs
    assert first.properties["conversation_id"] == first.message_id
    other = parse(raw.replace(b"body", b"other body"))
    assert other.message_id != first.message_id
    long_id = "<" + "x" * 300 + "@example.com>"
    long = parse(crlf(f"From: z@example.com\nMessage-ID: {long_id}\n\nbody"))
    assert long.message_id.startswith("email:sha256:") and len(long.message_id) <= 255


def test_bad_date_falls_back_to_internaldate_then_now() -> None:
    raw = crlf("From: z@example.com\nMessage-ID: <d@x.y>\nDate: yesterday-ish\n\nbody")
    internal = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)
    assert parse(raw, internal_date=internal).occurred_at == internal
    assert parse(raw).occurred_at == RECEIVED
    future = raw.replace(b"yesterday-ish", b"Tue, 01 Jan 2036 00:00:00 +0000")
    assert parse(future, internal_date=internal).occurred_at == internal
    naive = raw.replace(b"yesterday-ish", b"Fri, 20 Nov 2026 08:00:00 -0000")
    assert parse(naive).occurred_at == datetime(2026, 11, 20, 8, 0, tzinfo=UTC)


def test_long_text_is_truncated_and_flagged() -> None:
    raw = crlf("From: z@example.com\nMessage-ID: <long@x.y>\n\n" + "word " * 10_000)
    props = parse(raw).properties
    assert len(props["text"]) == MAX_TEXT_CHARS
    assert props["text_truncated"] is True


def test_header_block_and_message_id_for_failure_rows() -> None:
    assert header_block(PLAIN).endswith("Content-Type: text/plain; charset=utf-8")
    assert "my order" not in header_block(PLAIN)
    assert len(header_block(b"X-A: " + b"a" * 100_000)) == 64 * 1024
    assert header_message_id(PLAIN) == "CAF=abc123@mail.example.com"
    assert header_message_id(b"\xff\xfe garbage") is None
