"""Outbound email over SMTP: build the MIME message, send it, and say if a retry can help.

Why our own ``Message-ID`` (``<act_…@domain of From>``): the hub knows it before sending,
so the delivery record carries it, and a customer's answer (``In-Reply-To``) can be tied
back to the action that wrote to them. Replies carry ``In-Reply-To`` and ``References``
(the answered message's references plus its Message-ID, RFC 5322 §3.6.4) so mail clients
thread them under the customer's message.

Why errors are split: an SMTP reply code says whether to try again. 4xx ("try later",
greylisting, a full queue), a dropped connection or a timeout are transient; 5xx (no
such user, authentication refused, message rejected) will not change by waiting and are
permanent, kept with the server's code and text. A certificate that does not verify is
permanent too: it is a configuration matter (``ECRM_SMTP_CA_FILE``), never something to
ignore by turning verification off.
"""

from __future__ import annotations

import smtplib
import ssl
from dataclasses import dataclass, field
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from pathlib import Path
from typing import Literal

from pipeline import HubError, PermanentError, Settings, TransientError, utcnow

Security = Literal["starttls", "tls", "none"]
#: RFC 5322 suggests trimming long References; keep the first and the latest ones
MAX_REFERENCES = 20


@dataclass(frozen=True)
class SmtpServer:
    """Where and how outbound email is handed over."""

    host: str
    port: int
    security: Security = "starttls"
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    timeout: float = 30.0
    #: PEM bundle to verify the server's certificate with (default: the system's)
    ca_file: Path | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> SmtpServer:
        if not settings.smtp_host:
            raise HubError("outbound email needs ECRM_SMTP_HOST")
        security: Security = "starttls"
        if settings.smtp_security in ("tls", "none"):
            security = "tls" if settings.smtp_security == "tls" else "none"
        return cls(
            host=settings.smtp_host,
            port=settings.smtp_port,
            security=security,
            user=settings.smtp_user,
            password=settings.smtp_password,
            timeout=settings.smtp_timeout_seconds,
            ca_file=settings.smtp_ca_file,
        )


@dataclass(frozen=True)
class OutgoingEmail:
    """One message to send; ``in_reply_to``/``references`` are RFC Message-IDs (``<…>``)."""

    message_id: str
    sender: str
    to: str
    subject: str
    text: str
    html: str | None = None
    in_reply_to: str | None = None
    references: tuple[str, ...] = ()


def our_message_id(action_id: str, sender: str) -> str:
    """``<{action_id}@{domain of the From address}>``."""
    domain = parseaddr(sender)[1].rpartition("@")[2] or "ecrm.invalid"
    return f"<{action_id}@{domain}>"


def reply_subject(original: str | None) -> str:
    """``Re: original`` (not ``Re: Re: …``)."""
    subject = (original or "").strip()
    return subject if subject.lower().startswith("re:") else f"Re: {subject}".rstrip()


def thread_references(in_reply_to: str, references: tuple[str, ...]) -> tuple[str, ...]:
    """The answered message's References plus its Message-ID, duplicates dropped, capped."""
    chain: list[str] = []
    for message_id in (*references, in_reply_to):
        if message_id and message_id not in chain:
            chain.append(message_id)
    if len(chain) > MAX_REFERENCES:
        chain = [chain[0], *chain[-(MAX_REFERENCES - 1) :]]
    return tuple(chain)


def build_message(email: OutgoingEmail, *, now: datetime | None = None) -> EmailMessage:
    """The MIME message: text, plus an HTML alternative when given; threading for replies.

    Header values with line breaks are refused by ``email``'s default policy (a
    ``ValueError``), so a subject can never inject headers.
    """
    message = EmailMessage()
    message["From"] = email.sender
    message["To"] = email.to
    message["Subject"] = email.subject
    message["Date"] = format_datetime(now or utcnow())
    message["Message-ID"] = email.message_id
    if email.in_reply_to:
        message["In-Reply-To"] = email.in_reply_to
        message["References"] = " ".join(thread_references(email.in_reply_to, email.references))
    message.set_content(email.text)
    if email.html:
        message.add_alternative(email.html, subtype="html")
    return message


def send(server: SmtpServer, message: EmailMessage) -> str:
    """Hand ``message`` to the server; returns its Message-ID.

    Raises :class:`TransientError` or :class:`PermanentError` (see the module docstring).
    """
    envelope_from = parseaddr(str(message["From"]))[1]
    recipient = parseaddr(str(message["To"]))[1]
    try:
        context = ssl.create_default_context(cafile=str(server.ca_file) if server.ca_file else None)
        client = (
            smtplib.SMTP_SSL(server.host, server.port, timeout=server.timeout, context=context)
            if server.security == "tls"
            else smtplib.SMTP(server.host, server.port, timeout=server.timeout)
        )
        with client:
            if server.security == "starttls":
                client.starttls(context=context)
            if server.user:
                client.login(server.user, server.password or "")
            client.send_message(message, from_addr=envelope_from, to_addrs=[recipient])
    except Exception as exc:
        raise classify(exc, server) from exc
    return str(message["Message-ID"])


def classify(exc: BaseException, server: SmtpServer) -> HubError:
    """The hub's error for what ``smtplib`` raised (the server's code and text kept)."""
    where = f"{server.host}:{server.port}"
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        code, reply = next(iter(exc.recipients.values()), (550, b"recipient refused"))
        return _by_code(code, reply, "recipient refused")
    if isinstance(exc, smtplib.SMTPAuthenticationError):
        return _by_code(exc.smtp_code, exc.smtp_error, "authentication failed")
    if isinstance(exc, smtplib.SMTPResponseException):
        return _by_code(exc.smtp_code, exc.smtp_error, "server refused")
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        return TransientError(f"SMTP server {where} closed the connection: {exc}")
    if isinstance(exc, smtplib.SMTPNotSupportedError):
        return PermanentError(f"SMTP server {where}: {exc} (check ECRM_SMTP_SECURITY)")
    if isinstance(exc, ssl.SSLCertVerificationError):
        reason = getattr(exc, "verify_message", None) or exc
        return PermanentError(
            f"TLS certificate of {where} not trusted: {reason} "
            "(a private CA goes in ECRM_SMTP_CA_FILE)"
        )
    if isinstance(exc, TimeoutError):
        return TransientError(f"SMTP server {where} timed out")
    if isinstance(exc, OSError):
        return TransientError(f"cannot reach SMTP server {where}: {exc}")
    if isinstance(exc, smtplib.SMTPException):
        return TransientError(f"SMTP error with {where}: {exc}")
    if isinstance(exc, ValueError):  # a header the email package refuses
        return PermanentError(f"message cannot be built: {exc}")
    return TransientError(f"{type(exc).__name__} while sending to {where}: {exc}")


def _by_code(code: int, reply: bytes | str, what: str) -> HubError:
    text = reply.decode(errors="replace") if isinstance(reply, bytes) else str(reply)
    message = f"SMTP {code} {text.strip()} ({what})"
    return PermanentError(message) if 500 <= code < 600 else TransientError(message)


__all__ = [
    "OutgoingEmail",
    "SmtpServer",
    "build_message",
    "classify",
    "our_message_id",
    "reply_subject",
    "send",
    "thread_references",
]
