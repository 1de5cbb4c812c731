"""Twilio webhook forms -> touchpoints (pure), with the forms Twilio really sends."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from connectors.twilio import (
    call_completed,
    call_started,
    customer_identifiers,
    message_status,
    sms_received,
    status_callback,
)
from pipeline import Touchpoint, ValidationError
from pipeline.identifiers import normalize_identifiers

NOW = datetime(2026, 3, 4, 12, 30, tzinfo=UTC)
ACCOUNT = "AC" + "a" * 32
MESSAGE = "SM" + "0123456789abcdef" * 2
CALL = "CA" + "fedcba9876543210" * 2
CUSTOMER = "+14155550123"
OUR_NUMBER = "+15005550006"


def sms_form(**extra: str) -> dict[str, str]:
    form = {
        "ToCountry": "US",
        "ToState": "CA",
        "SmsMessageSid": MESSAGE,
        "NumMedia": "0",
        "ToCity": "SAN FRANCISCO",
        "FromZip": "94105",
        "SmsSid": MESSAGE,
        "FromState": "CA",
        "SmsStatus": "received",
        "FromCity": "SAN FRANCISCO",
        "Body": "Is my order ready?",
        "FromCountry": "US",
        "To": OUR_NUMBER,
        "MessagingServiceSid": "MG" + "1" * 32,
        "ToZip": "94105",
        "NumSegments": "1",
        "MessageSid": MESSAGE,
        "AccountSid": ACCOUNT,
        "From": CUSTOMER,
        "ApiVersion": "2010-04-01",
    }
    form.update(extra)
    return form


def call_form(**extra: str) -> dict[str, str]:
    form = {
        "AccountSid": ACCOUNT,
        "ApiVersion": "2010-04-01",
        "CallSid": CALL,
        "CallStatus": "ringing",
        "Called": OUR_NUMBER,
        "Caller": CUSTOMER,
        "Direction": "inbound",
        "From": CUSTOMER,
        "FromCountry": "US",
        "To": OUR_NUMBER,
        "ToCountry": "US",
        "CallerName": "",
        "ForwardedFrom": "",
    }
    form.update(extra)
    return form


def valid(touchpoint: dict[str, Any]) -> Touchpoint:
    """The fields pass the envelope and ingest's identifier normalization."""
    normalize_identifiers(touchpoint["identifiers"], "US")
    return Touchpoint.model_validate(touchpoint)


def test_incoming_sms_becomes_sms_received() -> None:
    touchpoint = sms_received(sms_form(), received_at=NOW, default_region="US")
    assert touchpoint == {
        "message_id": f"twilio:sms:{MESSAGE}",
        "channel": "sms",
        "type": "sms.received",
        "occurred_at": NOW,
        "received_at": NOW,
        "source": "twilio",
        "identifiers": {"phone": CUSTOMER},
        "properties": {
            "message_sid": MESSAGE,
            "body": "Is my order ready?",
            "from": CUSTOMER,
            "to": OUR_NUMBER,
            "num_media": 0,
            "messaging_service_sid": "MG" + "1" * 32,
            "num_segments": 1,
            "from_country": "US",
            "to_country": "US",
        },
        "context": {"twilio": {"account_sid": ACCOUNT, "api_version": "2010-04-01"}},
    }
    assert valid(touchpoint).traits == {}


def test_mms_keeps_every_media_url_and_type() -> None:
    form = sms_form(
        NumMedia="2",
        Body="",
        MediaUrl0="https://api.twilio.com/2010-04-01/Accounts/AC/Messages/MM/Media/ME1",
        MediaContentType0="image/jpeg",
        MediaUrl1="https://api.twilio.com/2010-04-01/Accounts/AC/Messages/MM/Media/ME2",
        MediaContentType1="application/pdf",
    )
    properties = sms_received(form, received_at=NOW, default_region="US")["properties"]
    assert properties["num_media"] == 2 and properties["body"] == ""
    assert [m["content_type"] for m in properties["media"]] == ["image/jpeg", "application/pdf"]
    assert properties["media"][1]["url"].endswith("/ME2")


@pytest.mark.parametrize(
    ("body", "keyword", "consent"),
    [
        ("STOP", "STOP", {"channel": "sms", "status": "opted_out", "keyword": "STOP"}),
        (" unsubscribe ", "STOP", {"channel": "sms", "status": "opted_out", "keyword": "STOP"}),
        ("Start", "START", {"channel": "sms", "status": "opted_in", "keyword": "START"}),
        ("unstop", "START", {"channel": "sms", "status": "opted_in", "keyword": "START"}),
        ("HELP", "HELP", None),
        ("stop sending me coupons", None, None),
    ],
)
def test_keywords_carry_the_consent_change(
    body: str, keyword: str | None, consent: dict[str, str] | None
) -> None:
    properties = sms_received(sms_form(Body=body), received_at=NOW, default_region="US")[
        "properties"
    ]
    assert properties.get("keyword") == keyword
    assert properties.get("consent") == consent


def test_opt_out_type_from_advanced_opt_out_wins() -> None:
    form = sms_form(Body="ARRET", OptOutType="STOP")
    properties = sms_received(form, received_at=NOW, default_region="US")["properties"]
    assert properties["consent"]["status"] == "opted_out"


def test_whatsapp_keyword_does_not_touch_sms_consent() -> None:
    form = sms_form(From=f"whatsapp:{CUSTOMER}", To=f"whatsapp:{OUR_NUMBER}", Body="STOP")
    touchpoint = sms_received(form, received_at=NOW, default_region="US")
    assert touchpoint["identifiers"] == {"phone": CUSTOMER}
    assert touchpoint["properties"]["keyword"] == "STOP"
    assert touchpoint["properties"]["via"] == "whatsapp"
    assert "consent" not in touchpoint["properties"]


def test_sms_from_a_short_code_is_kept_under_its_own_id() -> None:
    touchpoint = sms_received(
        sms_form(From="89363", Body="STOP"), received_at=NOW, default_region="US"
    )
    assert touchpoint["identifiers"] == {"anonymous_id": f"twilio-sms:{MESSAGE}"}
    assert "consent" not in touchpoint["properties"]  # no phone whose consent could change
    valid(touchpoint)


@pytest.mark.parametrize(
    ("form", "field"),
    [
        ({"MessageSid": "", "SmsMessageSid": "", "SmsSid": ""}, "MessageSid"),
        ({"MessageSid": "SM123"}, "MessageSid"),
        ({"From": ""}, "From"),
        ({"NumMedia": "two"}, "NumMedia"),
    ],
)
def test_invalid_sms_forms_name_the_field(form: dict[str, str], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        sms_received(sms_form(**form), received_at=NOW, default_region="US")
    assert caught.value.field == field


def test_incoming_call_becomes_call_started() -> None:
    form = call_form(CallerName="JANE DOE", ForwardedFrom="+14155550100")
    touchpoint = call_started(form, received_at=NOW, default_region="US")
    assert touchpoint["message_id"] == f"twilio:call:{CALL}:started"
    assert (touchpoint["channel"], touchpoint["type"]) == ("call", "call.started")
    assert touchpoint["identifiers"] == {"phone": CUSTOMER}
    assert touchpoint["properties"] == {
        "call_sid": CALL,
        "direction": "inbound",
        "from": CUSTOMER,
        "to": OUR_NUMBER,
        "caller_name": "JANE DOE",
        "forwarded_from": "+14155550100",
        "from_country": "US",
        "to_country": "US",
    }
    valid(touchpoint)


def test_outbound_call_customer_is_the_called_party() -> None:
    form = call_form(Direction="outbound-api", From=OUR_NUMBER, To=CUSTOMER)
    touchpoint = call_started(form, received_at=NOW, default_region="US")
    assert touchpoint["identifiers"] == {"phone": CUSTOMER}
    assert touchpoint["properties"]["direction"] == "outbound-api"


@pytest.mark.parametrize(
    ("caller", "identifiers"),
    [
        ("anonymous", {"anonymous_id": f"twilio-call:{CALL}"}),
        ("+266696687", {"anonymous_id": f"twilio-call:{CALL}"}),
        ("+7378742833", {"anonymous_id": f"twilio-call:{CALL}"}),
        ("+86282452253", {"anonymous_id": f"twilio-call:{CALL}"}),  # a "possible" number!
        ("Restricted", {"anonymous_id": f"twilio-call:{CALL}"}),
        ("client:alice", {"anonymous_id": "twilio-client:alice"}),
        (
            "sip:bob@shop.sip.twilio.com;transport=udp",
            {"anonymous_id": "twilio-sip:bob@shop.sip.twilio.com"},
        ),
        (f"sip:{CUSTOMER}@pbx.example.com", {"phone": CUSTOMER}),
        ("+44 20 7946 0958", {"phone": "+442079460958"}),
    ],
)
def test_callers_that_are_no_phone_number_never_refuse_the_call(
    caller: str, identifiers: dict[str, str]
) -> None:
    touchpoint = call_started(
        call_form(From=caller, Caller=caller), received_at=NOW, default_region="US"
    )
    assert touchpoint["identifiers"] == identifiers
    assert touchpoint["properties"]["from"] in (caller, identifiers.get("phone"))
    valid(touchpoint)


def test_status_callback_completed_call() -> None:
    form = call_form(
        CallStatus="completed",
        CallDuration="95",
        Timestamp="Wed, 04 Mar 2026 12:31:40 +0000",
        RecordingUrl="https://api.twilio.com/2010-04-01/Accounts/AC/Recordings/RE1",
    )
    touchpoint = status_callback(form, received_at=NOW, default_region="US")
    assert touchpoint is not None
    assert touchpoint["message_id"] == f"twilio:call:{CALL}:completed"
    assert touchpoint["type"] == "call.completed"
    assert touchpoint["occurred_at"] == datetime(2026, 3, 4, 12, 31, 40, tzinfo=UTC)
    properties = touchpoint["properties"]
    assert properties["duration"] == 95 and properties["disposition"] == "answered"
    assert properties["recording_url"].endswith("/RE1")
    assert (properties["from"], properties["to"]) == (CUSTOMER, OUR_NUMBER)
    assert "agent" not in properties
    valid(touchpoint)


@pytest.mark.parametrize(
    ("status", "disposition"),
    [("busy", "busy"), ("no-answer", "no-answer"), ("failed", "failed"), ("canceled", "canceled")],
)
def test_unanswered_calls_complete_with_their_disposition(status: str, disposition: str) -> None:
    touchpoint = call_completed(call_form(CallStatus=status), received_at=NOW, default_region="US")
    assert touchpoint is not None
    assert touchpoint["properties"]["disposition"] == disposition
    assert touchpoint["properties"]["duration"] == 0


@pytest.mark.parametrize("status", ["queued", "initiated", "ringing", "in-progress"])
def test_calls_in_progress_store_nothing(status: str) -> None:
    assert (
        status_callback(call_form(CallStatus=status), received_at=NOW, default_region="US") is None
    )


def test_dial_action_reports_the_agent_leg() -> None:
    form = call_form(
        CallStatus="in-progress",
        DialCallStatus="completed",
        DialCallSid="CA" + "1" * 32,
        DialCallDuration="42",
        DialBridged="true",
    )
    touchpoint = status_callback(form, received_at=NOW, default_region="US", agent="+15005550009")
    assert touchpoint is not None
    properties = touchpoint["properties"]
    assert (properties["duration"], properties["disposition"]) == (42, "answered")
    assert properties["agent"] == "+15005550009"
    assert properties["dial_call_sid"] == "CA" + "1" * 32
    assert touchpoint["message_id"] == f"twilio:call:{CALL}:completed"


def test_dial_nobody_answered() -> None:
    form = call_form(CallStatus="in-progress", DialCallStatus="no-answer", DialCallDuration="0")
    touchpoint = status_callback(form, received_at=NOW, default_region="US", agent="+15005550009")
    assert touchpoint is not None and touchpoint["properties"]["disposition"] == "no-answer"


@pytest.mark.parametrize(
    ("form", "field"),
    [
        ({"CallStatus": "exploded"}, "CallStatus"),
        ({"CallStatus": "completed", "CallDuration": "-3"}, "CallDuration"),
        ({"CallStatus": "completed", "CallSid": ""}, "CallSid"),
        ({"CallStatus": "completed", "From": ""}, "From"),
    ],
)
def test_invalid_call_status_forms_name_the_field(form: dict[str, str], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        status_callback(call_form(**form), received_at=NOW, default_region="US")
    assert caught.value.field == field


def message_form(status: str, **extra: str) -> dict[str, str]:
    form = {
        "AccountSid": ACCOUNT,
        "ApiVersion": "2010-04-01",
        "MessageSid": MESSAGE,
        "SmsSid": MESSAGE,
        "MessageStatus": status,
        "SmsStatus": status,
        "From": OUR_NUMBER,
        "To": CUSTOMER,
    }
    form.update(extra)
    return form


def test_message_delivered() -> None:
    touchpoint = status_callback(message_form("delivered"), received_at=NOW, default_region="US")
    assert touchpoint is not None
    assert touchpoint["message_id"] == f"twilio:sms:{MESSAGE}:delivered"
    assert (touchpoint["channel"], touchpoint["type"]) == ("sms", "sms.delivered")
    assert touchpoint["identifiers"] == {"phone": CUSTOMER}  # the recipient of our message
    valid(touchpoint)


@pytest.mark.parametrize("status", ["failed", "undelivered"])
def test_message_failed_keeps_the_error(status: str) -> None:
    form = message_form(status, ErrorCode="30003", ErrorMessage="Unreachable destination handset")
    touchpoint = message_status(form, received_at=NOW, default_region="US")
    assert touchpoint is not None
    assert touchpoint["type"] == "sms.failed"
    assert touchpoint["message_id"] == f"twilio:sms:{MESSAGE}:{status}"
    assert touchpoint["properties"]["error_code"] == "30003"
    assert touchpoint["properties"]["error_message"] == "Unreachable destination handset"


@pytest.mark.parametrize(
    "status", ["queued", "accepted", "scheduled", "sending", "sent", "read", "canceled", "received"]
)
def test_message_statuses_before_the_outcome_store_nothing(status: str) -> None:
    assert message_status(message_form(status), received_at=NOW, default_region="US") is None


def test_customer_identifiers_only_trust_international_numbers() -> None:
    # Twilio always sends E.164; a bare national number is not guessed into one.
    assert customer_identifiers("4155550123", "twilio-call:X", "US") == {
        "anonymous_id": "twilio-call:X"
    }
    assert customer_identifiers("+1 415 555 0123", "twilio-call:X", "US") == {"phone": CUSTOMER}
