"""email.send / email.reply delivered to a real SMTP server (aiosmtpd), on both databases.

Covers plain SMTP, STARTTLS with AUTH and implicit TLS (certificates verified against a
CA made for the test), 4xx (retried after a backoff, then sent), 5xx (failed, with the
server's reason), reply threading headers, consent, and the delivery record reaching the
recipient's profile through processing.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from outbound import WS, drain, event, events_of, profile_of, queue, runtime_for, store, view
from smtp_server import Certificates, SmtpSink, authenticator, make_ca, start
from sqlalchemy import update

from identity.views import timeline
from personalization.actions import MAX_ATTEMPTS, Action
from pipeline import Database, ValidationError, utcnow
from workers.delivery import deliver, relay_actions

FROM = "Shop Care <care@shop.example>"
T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


@pytest.fixture
def sink() -> Iterator[tuple[SmtpSink, int]]:
    handler = SmtpSink()
    controller = start(handler)
    yield handler, controller.port
    controller.stop()


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_ca(tmp_path_factory.mktemp("ca"))


def plain_env(port: int, **more: str) -> dict[str, str]:
    return {
        "ECRM_SMTP_HOST": "127.0.0.1",
        "ECRM_SMTP_PORT": str(port),
        "ECRM_SMTP_SECURITY": "none",
        "ECRM_EMAIL_FROM": FROM,
        **more,
    }


def inbound(message_id: str, sender: str, **properties: object) -> dict[str, object]:
    """An email.received event shaped like the IMAP connector's."""
    own = message_id.removeprefix("email:")
    return {
        "message_id": message_id,
        "channel": "email",
        "type": "email.received",
        "occurred_at": T0,
        "source": "imap",
        "identifiers": {"email": sender},
        "properties": {
            "subject": "Where is my order?",
            "email_message_id": own,
            "references": [],
            "conversation_id": own,
            "automated": False,
            **properties,
        },
    }


def test_email_send_is_delivered_and_lands_on_the_profile(
    any_db: Database, tmp_path: Path, sink: tuple[SmtpSink, int]
) -> None:
    handler, port = sink
    runtime = runtime_for(any_db, tmp_path, **plain_env(port))
    store(
        any_db,
        [
            {
                "message_id": "order-ana-1",
                "channel": "pos",
                "type": "order.completed",
                "occurred_at": T0,
                "identifiers": {"customer_id": "C-77", "email": "ana@example.com"},
            }
        ],
    )
    drain(any_db)
    customer = profile_of(any_db, "customer_id", "C-77")
    action_id = queue(
        runtime,
        {
            "kind": "email.send",
            "to": " Ana@Example.COM ",
            "subject": "Your order shipped",
            "text": "Hello Ana,\nit is on its way.",
            "html": "<p>Hello Ana,<br>it is on its way.</p>",
        },
    )

    assert deliver(runtime, action_id) == "sent"

    [received] = handler.messages()
    message = received.message
    assert received.mail_from == "care@shop.example"
    assert received.rcpt_tos == ["ana@example.com"]
    assert message["From"] == FROM and message["To"] == "ana@example.com"
    assert message["Subject"] == "Your order shipped"
    assert message["Message-ID"] == f"<{action_id}@shop.example>"
    assert message["Date"] is not None and message["In-Reply-To"] is None
    assert message.get_content_type() == "multipart/alternative"
    plain = message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert plain.replace("\r\n", "\n").strip() == "Hello Ana,\nit is on its way."
    assert "<p>Hello Ana" in message.get_body(("html",)).get_content()  # type: ignore[union-attr]
    shown = view(runtime, action_id)
    assert shown["status"] == "sent" and shown["attempts"] == 1 and shown["last_error"] is None
    assert shown["provider_id"] == f"<{action_id}@shop.example>" and shown["sent_at"]
    # delivered once, even when its task arrives again
    assert deliver(runtime, action_id) is None
    assert len(handler.messages()) == 1

    drain(any_db)
    record = event(any_db, f"action:{action_id}")
    assert record is not None
    assert (record["type"], record["channel"], record["source"]) == (
        "email.sent",
        "email",
        "ecrm.deliver",
    )
    assert record["identifiers"] == {"email": "ana@example.com"}
    assert record["properties"]["action_id"] == action_id
    assert record["properties"]["subject"] == "Your order shipped"
    assert record["properties"]["provider_id"] == f"<{action_id}@shop.example>"
    assert record["status"] == "processed"
    assert record["profile_id"] == customer
    with any_db.read() as session:
        shown = timeline(session, WS, customer)
    assert shown is not None  # the sent message is on the customer's timeline
    assert f"action:{action_id}" in [e["message_id"] for e in shown["events"]]


def test_starttls_with_auth_verifies_the_certificate(
    sqlite_db: Database, tmp_path: Path, certs: Certificates
) -> None:
    handler = SmtpSink()
    controller = start(
        handler,
        tls_context=certs.server_context(),
        require_starttls=True,
        authenticator=authenticator({"hub": "s3cret pass"}),
        auth_required=True,
    )
    try:
        env = plain_env(
            controller.port,
            ECRM_SMTP_HOST="localhost",
            ECRM_SMTP_SECURITY="starttls",
            ECRM_SMTP_USER="hub",
            ECRM_SMTP_PASSWORD="s3cret pass",
        )
        trusted = runtime_for(sqlite_db, tmp_path, **env, ECRM_SMTP_CA_FILE=str(certs.ca_file))
        sent = queue(
            trusted, {"kind": "email.send", "to": "a@b.example", "subject": "s", "text": "t"}
        )
        assert deliver(trusted, sent) == "sent"
        [received] = handler.messages()
        assert received.authenticated_as == "hub"

        # verification is on by default: the system's CAs do not know the test CA
        untrusted = runtime_for(sqlite_db, tmp_path, **env)
        refused = queue(
            untrusted, {"kind": "email.send", "to": "a@b.example", "subject": "s", "text": "t"}
        )
        assert deliver(untrusted, refused) == "failed"
        assert "not trusted" in view(untrusted, refused)["last_error"]

        wrong = runtime_for(
            sqlite_db,
            tmp_path,
            **{**env, "ECRM_SMTP_PASSWORD": "guess"},
            ECRM_SMTP_CA_FILE=str(certs.ca_file),
        )
        denied = queue(
            wrong, {"kind": "email.send", "to": "a@b.example", "subject": "s", "text": "t"}
        )
        assert deliver(wrong, denied) == "failed"
        assert "535" in view(wrong, denied)["last_error"]
        assert len(handler.messages()) == 1
    finally:
        controller.stop()


def test_implicit_tls(sqlite_db: Database, tmp_path: Path, certs: Certificates) -> None:
    handler = SmtpSink()
    controller = start(handler, ssl_context=certs.server_context())
    try:
        runtime = runtime_for(
            sqlite_db,
            tmp_path,
            **plain_env(controller.port, ECRM_SMTP_HOST="localhost", ECRM_SMTP_SECURITY="tls"),
            ECRM_SMTP_CA_FILE=str(certs.ca_file),
        )
        action_id = queue(
            runtime, {"kind": "email.send", "to": "a@b.example", "subject": "s", "text": "t"}
        )
        assert deliver(runtime, action_id) == "sent"
        assert [r.rcpt_tos for r in handler.messages()] == [["a@b.example"]]
    finally:
        controller.stop()


def test_4xx_is_retried_after_a_backoff_then_sent(
    any_db: Database, tmp_path: Path, sink: tuple[SmtpSink, int]
) -> None:
    handler, port = sink
    runtime = runtime_for(any_db, tmp_path, **plain_env(port))
    handler.refuse_data = "451 4.3.0 Mail server temporarily rejected message"
    action_id = queue(
        runtime, {"kind": "email.send", "to": "bo@example.com", "subject": "Hi", "text": "x"}
    )

    before = utcnow()
    assert deliver(runtime, action_id) == "queued"
    shown = view(runtime, action_id)
    assert shown["attempts"] == 1 and "451" in shown["last_error"]
    due = datetime.fromisoformat(shown["due_at"])
    assert before + timedelta(seconds=29) < due < utcnow() + timedelta(seconds=31)
    # not due yet: neither a stray task nor the relay sends it early
    assert deliver(runtime, action_id) is None
    published: list[str] = []
    assert relay_actions(runtime, published.append) == 0

    handler.refuse_data = None
    with any_db.write() as session:  # time passes
        session.execute(update(Action).where(Action.id == action_id).values(due_at=utcnow()))
    assert relay_actions(runtime, published.append) == 1 and published == [action_id]
    assert deliver(runtime, action_id) == "sent"
    shown = view(runtime, action_id)
    assert shown["status"] == "sent" and shown["attempts"] == 2
    assert handler.data_attempts == 2 and len(handler.messages()) == 1


def test_transient_failures_back_off_then_give_up_and_can_be_retried(
    sqlite_db: Database, tmp_path: Path, sink: tuple[SmtpSink, int]
) -> None:
    from personalization import retry

    handler, port = sink
    runtime = runtime_for(sqlite_db, tmp_path, **plain_env(port))
    handler.refuse_data = "421 4.7.0 Too many connections"
    action_id = queue(
        runtime, {"kind": "email.send", "to": "cy@example.com", "subject": "Hi", "text": "x"}
    )
    waits = []
    for _ in range(MAX_ATTEMPTS):
        shown = view(runtime, action_id)
        status = deliver(runtime, action_id, now=datetime.fromisoformat(shown["due_at"]))
        after = view(runtime, action_id)
        if status == "queued":
            waits.append(
                round(
                    (
                        datetime.fromisoformat(after["due_at"])
                        - datetime.fromisoformat(after["updated_at"])
                    ).total_seconds()
                )
            )
    assert waits == [30, 60, 120, 240, 480, 960, 1920]
    assert after["status"] == "failed" and after["attempts"] == MAX_ATTEMPTS
    assert after["last_error"].startswith(f"gave up after {MAX_ATTEMPTS} attempts: SMTP 421")
    [failure] = events_of(sqlite_db, action_id)
    assert failure["type"] == "email.send_failed" and "421" in failure["properties"]["error"]

    handler.refuse_data = None
    with sqlite_db.write() as session:
        retry(session, WS, action_id)
    assert deliver(runtime, action_id) == "sent"
    assert view(runtime, action_id)["attempts"] == 1
    assert [e["type"] for e in events_of(sqlite_db, action_id)] == [
        "email.send_failed",
        "email.sent",
    ]


def test_5xx_fails_with_the_servers_reason(
    any_db: Database, tmp_path: Path, sink: tuple[SmtpSink, int]
) -> None:
    handler, port = sink
    runtime = runtime_for(any_db, tmp_path, **plain_env(port))
    handler.refuse_rcpt = "550 5.1.1 no such user"
    action_id = queue(
        runtime, {"kind": "email.send", "to": "gone@example.com", "subject": "Hi", "text": "x"}
    )

    assert deliver(runtime, action_id) == "failed"

    shown = view(runtime, action_id)
    assert shown["status"] == "failed" and shown["attempts"] == 1
    assert shown["last_error"] == "SMTP 550 5.1.1 no such user (recipient refused)"
    assert handler.messages() == []
    drain(any_db)
    [failure] = events_of(any_db, action_id)
    assert failure["type"] == "email.send_failed" and failure["status"] == "processed"
    assert failure["identifiers"] == {"email": "gone@example.com"}
    assert failure["properties"]["error"] == shown["last_error"]
    assert failure["profile_id"] == profile_of(any_db, "email", "gone@example.com")


def test_reply_threads_under_the_customers_email(
    any_db: Database, tmp_path: Path, sink: tuple[SmtpSink, int]
) -> None:
    handler, port = sink
    runtime = runtime_for(any_db, tmp_path, **plain_env(port))
    store(
        any_db,
        [
            inbound(
                "email:m2@cust.example",
                "bob@cust.example",
                references=["root@cust.example", "r1@shop.example"],
                conversation_id="root@cust.example",
            ),
            inbound("email:m3@cust.example", "bob@cust.example", reply_to=["orders@cust.example"]),
        ],
    )
    action_id = queue(
        runtime, {"kind": "email.reply", "in_reply_to": "email:m2@cust.example", "text": "Soon!"}
    )
    assert view(runtime, action_id)["to"] == "bob@cust.example"

    assert deliver(runtime, action_id) == "sent"

    [received] = handler.messages()
    message = received.message
    assert received.rcpt_tos == ["bob@cust.example"]
    assert message["Subject"] == "Re: Where is my order?"
    assert message["In-Reply-To"] == "<m2@cust.example>"
    assert message["References"] == "<root@cust.example> <r1@shop.example> <m2@cust.example>"
    assert message["Message-ID"] == f"<{action_id}@shop.example>"
    record = event(any_db, f"action:{action_id}")
    assert record is not None
    assert record["properties"]["in_reply_to"] == "email:m2@cust.example"
    assert record["properties"]["conversation_id"] == "root@cust.example"
    assert record["properties"]["subject"] == "Re: Where is my order?"

    # the email's own Message-ID names it too; Reply-To wins over the sender
    second = queue(
        runtime,
        {
            "kind": "email.reply",
            "in_reply_to": "<m3@cust.example>",
            "text": "x",
            "subject": "Re: x",
        },
    )
    assert view(runtime, second)["to"] == "orders@cust.example"
    assert deliver(runtime, second) == "sent"
    assert handler.messages()[1].message["In-Reply-To"] == "<m3@cust.example>"


def test_no_reply_to_a_robot_and_no_email_after_opt_out(
    sqlite_db: Database, tmp_path: Path, sink: tuple[SmtpSink, int]
) -> None:
    handler, port = sink
    runtime = runtime_for(sqlite_db, tmp_path, **plain_env(port))
    store(
        sqlite_db,
        [
            inbound("email:auto@cust.example", "dee@cust.example", automated=True, auto_reply=True),
            {
                "message_id": "unsubscribe-eve",
                "channel": "web",
                "type": "email.unsubscribed",
                "occurred_at": T0,
                "identifiers": {"email": "eve@example.com"},
                "properties": {"consent": {"channel": "email", "status": "opted_out"}},
            },
        ],
    )
    drain(sqlite_db)
    robot = queue(
        runtime, {"kind": "email.reply", "in_reply_to": "email:auto@cust.example", "text": "x"}
    )
    opted_out = queue(
        runtime, {"kind": "email.send", "to": "EVE@example.com", "subject": "s", "text": "t"}
    )

    assert deliver(runtime, robot) == "suppressed"
    assert deliver(runtime, opted_out) == "suppressed"

    assert "automated (auto_reply)" in view(runtime, robot)["last_error"]
    reason = view(runtime, opted_out)["last_error"]
    assert "email consent" in reason and "unsubscribe-eve" in reason
    assert handler.messages() == [] and handler.data_attempts == 0
    assert events_of(sqlite_db, robot) == [] and events_of(sqlite_db, opted_out) == []


def test_unconfigured_email_fails_visibly(sqlite_db: Database, tmp_path: Path) -> None:
    runtime = runtime_for(sqlite_db, tmp_path)
    action_id = queue(
        runtime, {"kind": "email.send", "to": "a@b.example", "subject": "s", "text": "t"}
    )
    assert deliver(runtime, action_id) == "failed"
    assert "ECRM_SMTP_HOST" in view(runtime, action_id)["last_error"]


#: one database for all the cases (each case only reads)
INVALID = [
    ({"kind": "fax.send", "to": "a@b.example", "text": "t"}, "kind"),
    ({"to": "a@b.example", "text": "t"}, "kind"),
    ({"kind": "email.send", "to": "a@b.example", "text": "t"}, "subject"),
    ({"kind": "email.send", "subject": "s", "text": "t"}, "to"),
    ({"kind": "email.send", "to": "not-an-address", "subject": "s", "text": "t"}, "to"),
    (
        {"kind": "email.send", "to": "a@b.example", "subject": "a\r\nBcc: x@y.z", "text": "t"},
        "subject",
    ),
    ({"kind": "email.send", "to": "a@b.example", "subject": "s"}, "text"),
    ({"kind": "email.send", "to": "a@b.example", "subject": "s", "text": 5}, "text"),
    ({"kind": "email.send", "to": "a@b.example", "subject": "s", "text": "t", "cc": "x"}, "cc"),
    (
        {"kind": "email.send", "profile_id": "prof_nobody", "subject": "s", "text": "t"},
        "profile_id",
    ),
    ({"kind": "email.reply", "text": "t"}, "in_reply_to"),
    ({"kind": "email.reply", "in_reply_to": "email:nope@x.example", "text": "t"}, "in_reply_to"),
    (
        {
            "kind": "email.send",
            "to": "a@b.example",
            "subject": "s",
            "text": "t",
            "in_reply_to": "x",
        },
        "in_reply_to",
    ),
    ({"kind": "sms.send", "to": "+14155550100", "text": "t", "subject": "s"}, "subject"),
    ({"kind": "sms.send", "to": "+14155550100", "text": "x" * 1601}, "text"),
    ({"kind": "sms.send", "to": "12", "text": "t"}, "to"),
]


def test_requests_are_validated_naming_the_field(sqlite_db: Database, tmp_path: Path) -> None:
    runtime = runtime_for(sqlite_db, tmp_path)
    for body, field in INVALID:
        with pytest.raises(ValidationError) as caught:
            queue(runtime, body)
        assert caught.value.field == field, (body, str(caught.value))
    with sqlite_db.read() as session:
        assert session.query(Action).count() == 0


def test_profile_id_resolves_to_its_latest_address(sqlite_db: Database, tmp_path: Path) -> None:
    runtime = runtime_for(sqlite_db, tmp_path)
    store(
        sqlite_db,
        [
            {
                "message_id": "signup-fay",
                "channel": "web",
                "type": "account.created",
                "occurred_at": T0,
                "identifiers": {
                    "user_id": "fay",
                    "email": "fay@example.com",
                    "phone": "+1 415 555 0142",
                },
            }
        ],
    )
    drain(sqlite_db)
    profile = profile_of(sqlite_db, "user_id", "fay")
    email = queue(
        runtime, {"kind": "email.send", "profile_id": profile, "subject": "s", "text": "t"}
    )
    sms = queue(runtime, {"kind": "sms.send", "profile_id": profile, "text": "t"})
    assert view(runtime, email)["to"] == "fay@example.com"
    assert view(runtime, sms)["to"] == "+14155550142"
    assert view(runtime, sms)["profile_id"] == profile
    with pytest.raises(ValidationError) as caught:
        queue(
            runtime,
            {
                "kind": "sms.send",
                "profile_id": profile_of(sqlite_db, "email", "eve@example.com") or "x",
                "text": "t",
            },
        )
    assert caught.value.field == "profile_id"
