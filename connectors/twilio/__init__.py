"""Twilio connector: voice/SMS webhooks in, SMS out through the REST API.

Inbound, Twilio calls the hub (routes in ``workers.api_twilio``): each request is checked
against its ``X-Twilio-Signature`` (:mod:`~connectors.twilio.signature`), its form becomes a
touchpoint (:mod:`~connectors.twilio.webhooks`: ``sms.received``, ``call.started``,
``call.completed``, ``sms.delivered``, ``sms.failed``; STOP/START/HELP keywords from
:mod:`~connectors.twilio.keywords` carry the SMS consent change), and calls are answered
with TwiML (:mod:`~connectors.twilio.twiml`).
"""

from connectors.twilio.keywords import (
    HELP_WORDS,
    START_WORDS,
    STOP_WORDS,
    Keyword,
    consent_change,
    keyword_of,
)
from connectors.twilio.signature import (
    SIGNATURE_HEADER,
    FormParams,
    is_genuine,
    parse_form,
    signed_url,
)
from connectors.twilio.twiml import answer_call, empty_messaging, empty_voice
from connectors.twilio.webhooks import (
    call_completed,
    call_started,
    customer_identifiers,
    message_status,
    sms_received,
    status_callback,
)

__all__ = [
    "HELP_WORDS",
    "SIGNATURE_HEADER",
    "START_WORDS",
    "STOP_WORDS",
    "FormParams",
    "Keyword",
    "answer_call",
    "call_completed",
    "call_started",
    "consent_change",
    "customer_identifiers",
    "empty_messaging",
    "empty_voice",
    "is_genuine",
    "keyword_of",
    "message_status",
    "parse_form",
    "signed_url",
    "sms_received",
    "status_callback",
]
