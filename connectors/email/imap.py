"""Connecting to an IMAP server, and ``ecrm mailboxes test``'s step-by-step diagnosis.

Why one step at a time: "could not connect" helps nobody. A wrong host fails at the DNS
lookup, a firewall at the TCP connect, ``tls`` on a STARTTLS port (or the reverse) at the
TLS handshake, a bad certificate at its verification, a wrong app password at the login
and a typo in a folder name at that folder. Each step says which one, in one line.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError, LoginError
from imapclient.imapclient import SocketTimeout

from connectors.email.mailboxes import MailboxSettings
from pipeline.errors import TransientError

CONNECT_TIMEOUT = 15.0
READ_TIMEOUT = 60.0


class MailboxError(TransientError):
    """A mailbox cannot be used right now; ``step`` names what failed (login, folder…).

    Transient on purpose: the poller retries with backoff, so fixing the password or
    creating the folder is picked up without a restart.
    """

    def __init__(self, step: str, message: str) -> None:
        super().__init__(message)
        self.step = step


@dataclass(frozen=True)
class Step:
    """One passed check of ``ecrm mailboxes test``."""

    name: str
    detail: str


def _why(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    text = str(exc).strip() or type(exc).__name__
    return text.removeprefix("b'").removesuffix("'")


def _tls_context() -> ssl.SSLContext:
    return ssl.create_default_context()  # verifies the certificate and the host name


def _tls_error(settings: MailboxSettings, exc: ssl.SSLError) -> MailboxError:
    where = f"{settings.host}:{settings.port}"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return MailboxError(
            "tls", f"TLS certificate of {settings.host} is not valid: {exc.verify_message}"
        )
    hint = (
        " (is this a STARTTLS port? try --security starttls, usually port 143)"
        if settings.security == "tls"
        else ""
    )
    return MailboxError("tls", f"TLS handshake with {where} failed: {exc.reason or exc}{hint}")


def open_connection(settings: MailboxSettings) -> IMAPClient:
    """TCP (and TLS) to the server, greeting read; not logged in yet."""
    where = f"{settings.host}:{settings.port}"
    timeout = SocketTimeout(connect=CONNECT_TIMEOUT, read=READ_TIMEOUT)
    try:
        client = IMAPClient(
            settings.host,
            port=settings.port,
            ssl=settings.security == "tls",
            ssl_context=_tls_context(),
            timeout=timeout,
        )
    except ssl.SSLError as exc:
        raise _tls_error(settings, exc) from None
    except socket.gaierror as exc:
        raise MailboxError("dns", f"DNS lookup of {settings.host} failed: {_why(exc)}") from None
    except TimeoutError:
        hint = " (is this a TLS port? try --security tls)" if settings.security != "tls" else ""
        raise MailboxError("connect", f"no IMAP greeting from {where}: timed out{hint}") from None
    except (OSError, IMAPClientError) as exc:
        raise MailboxError("connect", f"cannot connect to {where}: {_why(exc)}") from None
    client.normalise_times = False  # INTERNALDATE as aware datetimes, not local naive ones
    if settings.security == "starttls":
        try:
            if not client.has_capability("STARTTLS"):
                raise MailboxError(
                    "tls", f"{where} does not offer STARTTLS (try --security tls, port 993)"
                )
            client.starttls(_tls_context())
        except ssl.SSLError as exc:
            close_quietly(client)
            raise _tls_error(settings, exc) from None
        except MailboxError:
            close_quietly(client)
            raise
    return client


def login(client: IMAPClient, settings: MailboxSettings, password: str) -> None:
    """Log in; a refusal says which user and what the server answered (never the password)."""
    try:
        client.login(settings.username, password)
    except LoginError as exc:
        raise MailboxError(
            "login", f"login refused for user {settings.username!r}: {_why(exc)}"
        ) from None
    except (IMAPClientError, OSError) as exc:
        raise MailboxError(
            "login", f"login failed for user {settings.username!r}: {_why(exc)}"
        ) from None


def connect(settings: MailboxSettings, password: str) -> IMAPClient:
    """A logged-in client (the caller logs out)."""
    client = open_connection(settings)
    try:
        login(client, settings, password)
    except MailboxError:
        close_quietly(client)
        raise
    return client


def missing_folder(client: IMAPClient, folder: str) -> MailboxError:
    """The error for a folder that cannot be selected, listing what exists."""
    try:
        names = [name for _flags, _sep, name in client.list_folders()]
    except (IMAPClientError, OSError):
        names = []
    shown = ", ".join(str(name) for name in names[:20]) + (" …" if len(names) > 20 else "")
    listing = f" (the server has: {shown})" if names else ""
    return MailboxError("folder", f"folder {folder!r} does not exist{listing}")


def check_mailbox(
    settings: MailboxSettings, password: str, on_step: Callable[[Step], None] | None = None
) -> list[Step]:
    """Every check of ``ecrm mailboxes test`` in order; the first failure raises."""
    steps: list[Step] = []

    def passed(name: str, detail: str) -> None:
        step = Step(name, detail)
        steps.append(step)
        if on_step is not None:
            on_step(step)

    where = f"{settings.host}:{settings.port}"
    try:
        infos = socket.getaddrinfo(settings.host, settings.port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise MailboxError("dns", f"DNS lookup of {settings.host} failed: {_why(exc)}") from None
    passed("dns", f"{settings.host} -> {', '.join(sorted({str(i[4][0]) for i in infos}))}")
    try:
        socket.create_connection((settings.host, settings.port), timeout=CONNECT_TIMEOUT).close()
    except OSError as exc:
        raise MailboxError("connect", f"cannot connect to {where}: {_why(exc)}") from None
    passed("connect", f"TCP connection to {where}")
    client = open_connection(settings)
    try:
        if settings.security == "none":
            passed("tls", "none (plain text: use only on a trusted network)")
        else:
            passed("tls", f"{settings.security}: certificate valid for {settings.host}")
        login(client, settings, password)
        passed("login", f"logged in as {settings.username}")
        for folder in settings.folders:
            try:
                status = client.select_folder(folder, readonly=True)
            except IMAPClientError:
                raise missing_folder(client, folder) from None
            passed(
                "folder",
                f"{folder}: {int(status.get(b'EXISTS', 0))} messages, "
                f"UIDVALIDITY {int(status.get(b'UIDVALIDITY', 0))}",
            )
        if client.has_capability("IDLE"):
            passed("idle", "IDLE supported: new mail is picked up as it arrives")
        else:
            passed("idle", "IDLE not offered: the folder is polled (ECRM_MAIL_POLL_SECONDS)")
    finally:
        close_quietly(client)
    return steps


def close_quietly(client: IMAPClient) -> None:
    """Log out if the connection still works, else just drop it."""
    try:
        client.logout()
    except Exception:
        with contextlib.suppress(Exception):  # already gone: nothing left to close
            client.shutdown()
