"""Pure parts of outbound delivery: MIME building, threading, and error classification."""

from __future__ import annotations

import smtplib
import ssl
from pathlib import Path

import pytest
from twilio.base.exceptions import TwilioRestException

from connectors.email.smtp import (
    OutgoingEmail,
    SmtpServer,
    build_message,
    classify,
    our_message_id,
    reply_subject,
    thread_references,
)
from connectors.twilio.rest import SmsRefused, TwilioAccount
from connectors.twilio.rest import classify as classify_twilio
from pipeline import HubError, PermanentError, SettingsError, TransientError, load_settings

SERVER = SmtpServer("smtp.example.com", 587)


def email(**changes: object) -> OutgoingEmail:
    fields: dict[str, object] = {
        "message_id": "<act_1@shop.example>",
        "sender": "Shop <care@shop.example>",
        "to": "ana@example.com",
        "subject": "Hello",
        "text": "plain",
        **changes,
    }
    return OutgoingEmail(**fields)  # type: ignore[arg-type]


def test_text_only_and_alternative_messages() -> None:
    plain = build_message(email())
    assert plain.get_content_type() == "text/plain"
    assert plain["Message-ID"] == "<act_1@shop.example>" and plain["Date"]
    assert "In-Reply-To" not in plain and "References" not in plain
    both = build_message(email(html="<b>hi</b>"))
    assert both.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in both.iter_parts()] == ["text/plain", "text/html"]


def test_reply_headers_thread_under_the_original() -> None:
    message = build_message(
        email(in_reply_to="<m2@c.example>", references=("<root@c.example>", "<m1@s.example>"))
    )
    assert message["In-Reply-To"] == "<m2@c.example>"
    assert message["References"] == "<root@c.example> <m1@s.example> <m2@c.example>"


def test_a_subject_cannot_inject_headers() -> None:
    with pytest.raises(ValueError):
        build_message(email(subject="Hi\r\nBcc: everyone@example.com"))


def test_ids_subjects_and_reference_chains() -> None:
    assert our_message_id("act_9", "Shop Care <care@shop.example>") == "<act_9@shop.example>"
    assert reply_subject("Where is my order?") == "Re: Where is my order?"
    assert reply_subject("RE: again") == "RE: again"
    assert reply_subject(None) == "Re:"
    long = tuple(f"<r{n}@x>" for n in range(30))
    chain = thread_references("<new@x>", long)
    assert len(chain) == 20 and chain[0] == "<r0@x>" and chain[-1] == "<new@x>"
    assert thread_references("<a@x>", ("<a@x>",)) == ("<a@x>",)


@pytest.mark.parametrize(
    ("error", "kind", "text"),
    [
        (
            smtplib.SMTPRecipientsRefused({"a@b": (550, b"5.1.1 no such user")}),
            PermanentError,
            "550",
        ),
        (smtplib.SMTPRecipientsRefused({"a@b": (450, b"mailbox busy")}), TransientError, "450"),
        (smtplib.SMTPDataError(451, b"try later"), TransientError, "SMTP 451 try later"),
        (smtplib.SMTPDataError(554, b"spam"), PermanentError, "SMTP 554 spam"),
        (smtplib.SMTPAuthenticationError(535, b"bad credentials"), PermanentError, "535"),
        (smtplib.SMTPAuthenticationError(454, b"temporary"), TransientError, "454"),
        (smtplib.SMTPSenderRefused(553, b"not yours", "x@y"), PermanentError, "553"),
        (smtplib.SMTPConnectError(421, b"busy"), TransientError, "421"),
        (smtplib.SMTPServerDisconnected("gone"), TransientError, "closed the connection"),
        (
            smtplib.SMTPNotSupportedError("STARTTLS extension not supported"),
            PermanentError,
            "ECRM_SMTP_SECURITY",
        ),
        (ConnectionRefusedError(111, "refused"), TransientError, "cannot reach"),
        (TimeoutError(), TransientError, "timed out"),
        (ssl.SSLCertVerificationError("self-signed"), PermanentError, "ECRM_SMTP_CA_FILE"),
    ],
)
def test_smtp_errors_say_whether_to_retry(
    error: BaseException, kind: type[HubError], text: str
) -> None:
    classified = classify(error, SERVER)
    assert type(classified) is kind and text in str(classified)


@pytest.mark.parametrize(
    ("status", "code", "transient", "unsubscribed"),
    [
        (429, 20429, True, False),
        (500, None, True, False),
        (503, None, True, False),
        (400, 21211, False, False),
        (400, 21610, False, True),
        (401, 20003, False, False),
    ],
)
def test_twilio_errors_say_whether_to_retry(
    status: int, code: int | None, transient: bool, unsubscribed: bool
) -> None:
    classified = classify_twilio(TwilioRestException(status, "/x", "msg", code, "POST"))
    assert isinstance(classified, TransientError) is transient
    if not transient:
        assert isinstance(classified, SmsRefused) and classified.unsubscribed is unsubscribed


def test_twilio_account_from_settings(tmp_path: Path) -> None:
    with pytest.raises(HubError, match="ECRM_TWILIO_AUTH_TOKEN, ECRM_TWILIO_FROM"):
        TwilioAccount.from_settings(load_settings({"ECRM_TWILIO_ACCOUNT_SID": "AC1"}))
    account = TwilioAccount.from_settings(
        load_settings(
            {
                "ECRM_TWILIO_ACCOUNT_SID": "AC1",
                "ECRM_TWILIO_AUTH_TOKEN": "token-value",
                "ECRM_TWILIO_FROM": "+1 500 555 0006",
                "ECRM_PUBLIC_URL": "https://hub.example.com",
            }
        )
    )
    assert account.sender == "+15005550006" and account.api_url == "https://api.twilio.com"
    assert account.status_callback == "https://hub.example.com/v1/twilio/status"
    assert "token-value" not in repr(account)


def test_smtp_ca_file_must_be_readable(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="ECRM_SMTP_CA_FILE"):
        load_settings({"ECRM_SMTP_CA_FILE": str(tmp_path / "missing.pem")})
    bundle = tmp_path / "ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    settings = load_settings({"ECRM_SMTP_CA_FILE": str(bundle), "ECRM_SMTP_PASSWORD": "pw-secret"})
    assert settings.smtp_ca_file == bundle
    assert SmtpServer.from_settings(
        load_settings({"ECRM_SMTP_HOST": "mx.example.com", "ECRM_SMTP_SECURITY": "tls"})
    ) == SmtpServer("mx.example.com", 465, "tls")
    assert "pw-secret" not in repr(SmtpServer("h", 1, password="pw-secret"))
