"""Twilio webhook forms -> touchpoints. Pure: no I/O, no settings, tested without a server.

Which webhook becomes which event (channel, type, ``message_id``; Twilio may deliver a webhook
more than once, so every id is built from its SIDs and a retry is a duplicate, stored once):

* incoming SMS/MMS (``/v1/twilio/sms``) -> ``sms.received``, ``twilio:sms:{MessageSid}``
* incoming call (``/v1/twilio/voice``) -> ``call.started``, ``twilio:call:{CallSid}:started``
* the call ended (``/v1/twilio/status``: a status callback with a terminal ``CallStatus``,
  or the ``<Dial action>`` callback with ``DialCallStatus``) -> ``call.completed``,
  ``twilio:call:{CallSid}:completed``
* message status ``delivered`` -> ``sms.delivered``, ``twilio:sms:{MessageSid}:delivered``
* message status ``failed`` / ``undelivered`` -> ``sms.failed``,
  ``twilio:sms:{MessageSid}:{status}``

Non-terminal statuses (calls: queued, initiated, ringing, in-progress; messages: queued,
accepted, scheduled, sending, sent, receiving, received, read, canceled…) become nothing:
the outbound SMS connector records the send itself, and only the outcome is news. The
``<Dial action>`` callback and the number's own status callback of one call share the id
``…:completed``; the first to arrive (the Dial action, which knows the agent and the
recording) is kept.

Who the customer is: the caller (``From``) of an inbound call or message; the called party
(``To``) of an ``outbound-*`` call and of a message status (we sent that message). Twilio
sends E.164 numbers; what is not one (withheld ``anonymous``/``+266696687``…, ``client:alice``,
``sip:…``) never refuses the event: ``client:``/``sip:`` identities become a stable
``anonymous_id`` (``twilio-client:alice``), anything else one unique to the call or message
(``twilio-call:{CallSid}``, ``twilio-sms:{MessageSid}``), which can join no one else.

**The SMS consent contract** (identity derives the profile's SMS consent from it, keyed on
the event's ``phone`` identifier): an ``sms.received`` from a phone number whose body is an
opt-out or opt-in keyword (see :mod:`connectors.twilio.keywords`; Twilio's
``OptOutType`` field wins) carries ::

    properties.keyword = "STOP" | "START" | "HELP"
    properties.consent = {"channel": "sms", "status": "opted_out", "keyword": "STOP"}
                       | {"channel": "sms", "status": "opted_in", "keyword": "START"}

HELP sets only ``properties.keyword``. WhatsApp messages (``whatsapp:+…``) keep their
keyword but carry no ``consent``: Twilio's SMS opt-out does not cover them.

Twilio's webhooks carry no time, except call status callbacks (``Timestamp``, RFC 2822):
``occurred_at`` is that when present, else the time the hub received the request.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any

from connectors.twilio.keywords import consent_change, keyword_of
from pipeline.envelope import Channel
from pipeline.errors import ValidationError
from pipeline.identifiers import MAX_VALUE_LENGTH, normalize_phone

SOURCE = "twilio"
#: Twilio SIDs: two letters and 32 hex digits (``SM…``, ``MM…``, ``CA…``, ``AC…``).
SID_RE = re.compile(r"^[A-Z]{2}[0-9a-f]{32}$")
#: Terminal call statuses -> disposition (a completed call was answered).
CALL_DISPOSITIONS = {
    "completed": "answered",
    "answered": "answered",  # DialCallStatus only
    "busy": "busy",
    "no-answer": "no-answer",
    "failed": "failed",
    "canceled": "canceled",
}
CALL_IN_PROGRESS = frozenset({"queued", "initiated", "ringing", "in-progress"})
#: Terminal message statuses -> event type; every other status is not stored.
MESSAGE_OUTCOMES = {
    "delivered": "sms.delivered",
    "failed": "sms.failed",
    "undelivered": "sms.failed",
}
MAX_MEDIA = 10
#: What Twilio puts in ``From`` for a withheld caller id (words, and the keypad spellings
#: of ANONYMOUS, UNKNOWN, RESTRICTED, UNAVAILABLE and BLOCKED).
WITHHELD = frozenset(
    {
        "",
        "anonymous",
        "unknown",
        "restricted",
        "unavailable",
        "blocked",
        "private",
        "+266696687",
        "+86282452253",
        "+7378742833",
        "+8656696",
        "+2562533",
    }
)

Form = Mapping[str, str]


def sms_received(form: Form, *, received_at: datetime, default_region: str) -> dict[str, Any]:
    """The ``sms.received`` touchpoint of an incoming message (``/v1/twilio/sms``)."""
    sid = _sid(form, "MessageSid", "SmsMessageSid", "SmsSid")
    sender = _required(form, "From")
    scheme, _ = _split_address(sender)
    properties: dict[str, Any] = {
        "message_sid": sid,
        "body": form.get("Body", ""),
        "from": sender,
        "to": form.get("To", ""),
    }
    media = _media(form)
    properties["num_media"] = len(media) if "NumMedia" not in form else _count(form, "NumMedia")
    if media:
        properties["media"] = media
    if scheme == "whatsapp":
        properties["via"] = "whatsapp"
    _copy(form, properties, MessagingServiceSid="messaging_service_sid")
    if "NumSegments" in form:
        properties["num_segments"] = _count(form, "NumSegments")
    _copy(form, properties, FromCountry="from_country", ToCountry="to_country")
    identifiers = customer_identifiers(sender, f"twilio-sms:{sid}", default_region)
    keyword = keyword_of(form.get("Body"), form.get("OptOutType"))
    if keyword is not None:
        properties["keyword"] = keyword
        consent = consent_change(keyword) if scheme is None and "phone" in identifiers else None
        if consent is not None:
            properties["consent"] = consent
    return _touchpoint(
        form,
        message_id=f"twilio:sms:{sid}",
        channel=Channel.SMS,
        type_="sms.received",
        identifiers=identifiers,
        properties=properties,
        occurred_at=received_at,
        received_at=received_at,
    )


def call_started(form: Form, *, received_at: datetime, default_region: str) -> dict[str, Any]:
    """The ``call.started`` touchpoint of a call Twilio asks us to answer (``/v1/twilio/voice``)."""
    sid = _sid(form, "CallSid")
    direction, customer = _call_parties(form)
    properties: dict[str, Any] = {
        "call_sid": sid,
        "direction": direction,
        "from": _e164_or_raw(form.get("From", ""), default_region),
        "to": _e164_or_raw(form.get("To", ""), default_region),
    }
    _copy(form, properties, CallerName="caller_name", ForwardedFrom="forwarded_from")
    _copy(form, properties, FromCountry="from_country", ToCountry="to_country")
    return _touchpoint(
        form,
        message_id=f"twilio:call:{sid}:started",
        channel=Channel.CALL,
        type_="call.started",
        identifiers=customer_identifiers(customer, f"twilio-call:{sid}", default_region),
        properties=properties,
        occurred_at=received_at,
        received_at=received_at,
    )


def call_completed(
    form: Form, *, received_at: datetime, default_region: str, agent: str | None = None
) -> dict[str, Any] | None:
    """``call.completed`` for a terminal call status or a Dial action; None while in progress.

    ``agent`` is whom the call was forwarded to (the hub puts it in the Dial action URL,
    which Twilio signs, so it cannot be forged).
    """
    sid = _sid(form, "CallSid")
    dialed = "DialCallStatus" in form
    field = "DialCallStatus" if dialed else "CallStatus"
    status = _required(form, field).lower()
    if not dialed and status in CALL_IN_PROGRESS:
        return None
    disposition = CALL_DISPOSITIONS.get(status)
    if disposition is None:
        raise ValidationError(field, f"unknown call status {status!r}")
    direction, customer = _call_parties(form)
    duration_field = "DialCallDuration" if dialed else "CallDuration"
    properties: dict[str, Any] = {
        "call_sid": sid,
        "direction": direction,
        "from": _e164_or_raw(form.get("From", ""), default_region),
        "to": _e164_or_raw(form.get("To", ""), default_region),
        "duration": _count(form, duration_field) if form.get(duration_field) else 0,
        "disposition": disposition,
        "status": status,
    }
    if agent:
        properties["agent"] = _e164_or_raw(agent, default_region)
    _copy(form, properties, DialCallSid="dial_call_sid", AnsweredBy="answered_by")
    _copy(form, properties, RecordingUrl="recording_url", RecordingSid="recording_sid")
    if form.get("RecordingDuration"):
        properties["recording_duration"] = _count(form, "RecordingDuration")
    _copy(form, properties, CallerName="caller_name", ForwardedFrom="forwarded_from")
    return _touchpoint(
        form,
        message_id=f"twilio:call:{sid}:completed",
        channel=Channel.CALL,
        type_="call.completed",
        identifiers=customer_identifiers(customer, f"twilio-call:{sid}", default_region),
        properties=properties,
        occurred_at=_timestamp(form) or received_at,
        received_at=received_at,
    )


def message_status(
    form: Form, *, received_at: datetime, default_region: str
) -> dict[str, Any] | None:
    """``sms.delivered`` / ``sms.failed`` for a message status callback; None if not final."""
    sid = _sid(form, "MessageSid", "SmsSid")
    field = "MessageStatus" if "MessageStatus" in form else "SmsStatus"
    status = _required(form, field).lower()
    type_ = MESSAGE_OUTCOMES.get(status)
    if type_ is None:
        return None
    recipient = _required(form, "To")
    properties: dict[str, Any] = {
        "message_sid": sid,
        "status": status,
        "from": form.get("From", ""),
        "to": recipient,
    }
    _copy(form, properties, ErrorCode="error_code", ErrorMessage="error_message")
    _copy(form, properties, MessagingServiceSid="messaging_service_sid")
    return _touchpoint(
        form,
        message_id=f"twilio:sms:{sid}:{status}",
        channel=Channel.SMS,
        type_=type_,
        identifiers=customer_identifiers(recipient, f"twilio-sms:{sid}", default_region),
        properties=properties,
        occurred_at=received_at,
        received_at=received_at,
    )


def status_callback(
    form: Form, *, received_at: datetime, default_region: str, agent: str | None = None
) -> dict[str, Any] | None:
    """A ``/v1/twilio/status`` request: a message status, a call status or a Dial action."""
    is_message = "MessageStatus" in form or ("SmsStatus" in form and "CallSid" not in form)
    if is_message:
        return message_status(form, received_at=received_at, default_region=default_region)
    return call_completed(form, received_at=received_at, default_region=default_region, agent=agent)


def customer_identifiers(address: str, fallback: str, default_region: str) -> dict[str, str]:
    """``{"phone": E.164}`` for a number, else a stand-in ``anonymous_id`` (see module doc).

    ``fallback`` is unique to the call or message, for callers that cannot be told apart.
    """
    scheme, rest = _split_address(address)
    phone = _phone(rest, default_region) if scheme in (None, "whatsapp", "sip") else None
    if phone is not None:
        return {"phone": phone}
    if scheme in ("client", "sip") and rest and len(rest) <= MAX_VALUE_LENGTH - 20:
        return {"anonymous_id": f"twilio-{scheme}:{rest}"}
    return {"anonymous_id": fallback}


def _split_address(address: str) -> tuple[str | None, str]:
    """(``client``/``sip``/``whatsapp``/…, the rest) or (None, a number or word)."""
    text = address.strip()
    scheme, sep, rest = text.partition(":")
    if sep and re.fullmatch(r"[a-z]+", scheme.lower()):
        rest = rest.split(";", 1)[0]  # sip:…;transport=udp
        if scheme.lower() == "sip":
            rest = rest.removeprefix("//")
            user = rest.partition("@")[0]
            if _phone(user, "US") is not None:  # sip:+14155550100@… is a number (region unused)
                return "sip", user
        return scheme.lower(), rest
    return None, text


def _phone(value: str, default_region: str) -> str | None:
    """E.164 when ``value`` is a real phone number in international form, else None."""
    if not value.startswith("+") or value.lower() in WITHHELD:
        return None
    try:
        return normalize_phone(value, default_region)
    except ValueError:
        return None


def _e164_or_raw(value: str, default_region: str) -> str:
    scheme, rest = _split_address(value)
    phone = _phone(rest, default_region) if scheme is None else None
    return phone or value


def _call_parties(form: Form) -> tuple[str, str]:
    """(direction, the customer's address): ``From`` inbound, ``To`` for ``outbound-*``."""
    direction = (form.get("Direction") or "inbound").strip().lower()
    outbound = direction.startswith("outbound")
    return direction, _required(form, "To" if outbound else "From")


def _touchpoint(
    form: Form,
    *,
    message_id: str,
    channel: Channel,
    type_: str,
    identifiers: dict[str, str],
    properties: dict[str, Any],
    occurred_at: datetime,
    received_at: datetime,
) -> dict[str, Any]:
    twilio: dict[str, str] = {}
    _copy(form, twilio, AccountSid="account_sid", ApiVersion="api_version")
    return {
        "message_id": message_id,
        "channel": channel.value,
        "type": type_,
        "occurred_at": occurred_at,
        "received_at": received_at,
        "source": SOURCE,
        "identifiers": identifiers,
        "properties": properties,
        "context": {"twilio": twilio},
    }


def _sid(form: Form, *names: str) -> str:
    """The first of ``names`` present, checked to look like a Twilio SID."""
    for name in names:
        value = form.get(name, "").strip()
        if value:
            if not SID_RE.match(value):
                raise ValidationError(name, "is not a Twilio SID (two letters, 32 hex digits)")
            return value
    raise ValidationError(names[0], "is missing")


def _required(form: Form, name: str) -> str:
    value = form.get(name, "").strip()
    if not value:
        raise ValidationError(name, "is missing")
    return value


def _count(form: Form, name: str) -> int:
    value = form.get(name, "").strip()
    if not value.isdigit() or len(value) > 9:
        raise ValidationError(name, f"must be a whole number, got {value!r}")
    return int(value)


def _copy(form: Form, into: dict[str, Any], **names: str) -> None:
    """Copy the non-empty form fields ``names`` into ``into``, each under its new name."""
    for name, key in names.items():
        value = form.get(name, "").strip()
        if value:
            into[key] = value


def _media(form: Form) -> list[dict[str, str]]:
    media = []
    for index in range(MAX_MEDIA):
        url = form.get(f"MediaUrl{index}", "").strip()
        if not url:
            continue
        item = {"url": url}
        content_type = form.get(f"MediaContentType{index}", "").strip()
        if content_type:
            item["content_type"] = content_type
        media.append(item)
    return media


def _timestamp(form: Form) -> datetime | None:
    """The callback's ``Timestamp`` (RFC 2822) as aware UTC, if present and sane."""
    raw = form.get("Timestamp", "").strip()
    if not raw:
        return None
    try:
        moment = parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return moment if moment.tzinfo is not None else None


__all__ = [
    "CALL_DISPOSITIONS",
    "MESSAGE_OUTCOMES",
    "SOURCE",
    "WITHHELD",
    "call_completed",
    "call_started",
    "customer_identifiers",
    "message_status",
    "sms_received",
    "status_callback",
]
