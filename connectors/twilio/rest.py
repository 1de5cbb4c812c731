"""Outbound SMS through Twilio's REST API, with the official ``twilio`` client.

Why the client's domain ``base_url`` is set: the client has Twilio's address built in,
and ``ECRM_TWILIO_API_URL`` must be able to point elsewhere (a regional edge, a recording
proxy, the local stand-in the tests run). The ``api`` domain object is where the client
keeps that base URL, so the request still goes through the real client: its form
encoding, its Basic auth, its error parsing.

Why errors are split: Twilio answers 429 when we send too fast and 5xx when it is in
trouble (transient, like a lost connection), and other 4xx when the request itself is
wrong: an invalid number (21211), a sender we do not own, or 21610, the recipient texted
STOP, which also tells the caller to record the opt-out.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import requests
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

from pipeline import HubError, PermanentError, Settings, TransientError

#: Twilio's error code for a recipient who has opted out (texted STOP)
UNSUBSCRIBED_RECIPIENT = 21610
#: the client logs each request's URL (with the account SID) at INFO: keep it quieter
_quiet = logging.getLogger("ecrm.twilio.rest")
_quiet.setLevel(logging.WARNING)


@dataclass(frozen=True)
class TwilioAccount:
    """The account and sender outbound SMS go from."""

    account_sid: str
    auth_token: str = field(repr=False)
    #: an E.164 number, or a Messaging Service SID (``MG…``)
    sender: str
    api_url: str = "https://api.twilio.com"
    #: where Twilio posts delivery status (``{ECRM_PUBLIC_URL}/v1/twilio/status``)
    status_callback: str | None = None
    timeout: float = 30.0

    @classmethod
    def from_settings(cls, settings: Settings) -> TwilioAccount:
        missing = [
            name
            for name, value in (
                ("ECRM_TWILIO_ACCOUNT_SID", settings.twilio_account_sid),
                ("ECRM_TWILIO_AUTH_TOKEN", settings.twilio_auth_token),
                ("ECRM_TWILIO_FROM", settings.twilio_from),
            )
            if not value
        ]
        if missing:
            raise HubError(f"outbound SMS needs {', '.join(missing)}")
        callback = f"{settings.public_url}/v1/twilio/status" if settings.public_url else None
        return cls(
            account_sid=str(settings.twilio_account_sid),
            auth_token=str(settings.twilio_auth_token),
            sender=str(settings.twilio_from),
            api_url=settings.twilio_api_url,
            status_callback=callback,
        )


@dataclass(frozen=True)
class SentSms:
    """Twilio's answer: the message SID and its first status (``queued``, ``accepted``)."""

    sid: str
    status: str


class SmsRefused(PermanentError):
    """Twilio refused the message for good; ``code`` is Twilio's error code."""

    def __init__(self, message: str, code: int | None, status: int) -> None:
        super().__init__(message)
        self.code, self.status = code, status

    @property
    def unsubscribed(self) -> bool:
        """The recipient opted out (STOP): the hub must record it and stop sending."""
        return self.code == UNSUBSCRIBED_RECIPIENT


def client_for(account: TwilioAccount) -> Client:
    """A ``twilio`` client talking to ``account.api_url``."""
    client = Client(
        account.account_sid,
        account.auth_token,
        http_client=TwilioHttpClient(timeout=account.timeout, logger=_quiet),
    )
    client.api.base_url = account.api_url
    return client


def send_sms(
    account: TwilioAccount, to: str, body: str, *, client: Client | None = None
) -> SentSms:
    """Send one SMS to an E.164 number; raises :class:`TransientError` or :class:`SmsRefused`."""
    sender = (
        {"messaging_service_sid": account.sender}
        if account.sender.startswith("MG")
        else {"from_": account.sender}
    )
    callback = {"status_callback": account.status_callback} if account.status_callback else {}
    try:
        message = (client or client_for(account)).messages.create(
            to=to, body=body, **sender, **callback
        )
    except TwilioRestException as exc:
        raise classify(exc) from exc
    except requests.RequestException as exc:
        raise TransientError(f"cannot reach Twilio at {account.api_url}: {exc}") from exc
    except TwilioException as exc:
        raise TransientError(f"Twilio client error: {exc}") from exc
    return SentSms(sid=str(message.sid), status=str(message.status))


def classify(exc: TwilioRestException) -> HubError:
    """429/5xx: transient; any other refusal: :class:`SmsRefused` with Twilio's code."""
    code = f" (Twilio error {exc.code})" if exc.code else ""
    text = f"Twilio answered {exc.status}: {exc.msg}{code}"
    if exc.status == 429 or exc.status >= 500:
        return TransientError(text)
    return SmsRefused(text, exc.code, exc.status)


__all__ = [
    "UNSUBSCRIBED_RECIPIENT",
    "SentSms",
    "SmsRefused",
    "TwilioAccount",
    "classify",
    "client_for",
    "send_sms",
]
