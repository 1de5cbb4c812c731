"""Identifier normalization and the Segment mapping."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from connectors.web.segment import SegmentMessageError, event_type, to_touchpoint
from pipeline import Touchpoint, ValidationError
from pipeline.identifiers import lenient_identifiers, normalize_identifiers


def test_email_is_trimmed_and_case_folded() -> None:
    assert normalize_identifiers({"email": "  Bob.Smith@Example.COM "}, "US") == {
        "email": "bob.smith@example.com"
    }


@pytest.mark.parametrize(
    ("raw", "region", "expected"),
    [
        ("(415) 555-0123", "US", "+14155550123"),
        ("+44 20 7946 0958", "US", "+442079460958"),
        ("020 7946 0958", "GB", "+442079460958"),
        ("0044 20 7946 0958", "DE", "+442079460958"),
    ],
)
def test_phone_becomes_e164(raw: str, region: str, expected: str) -> None:
    assert normalize_identifiers({"phone": raw}, region) == {"phone": expected}


@pytest.mark.parametrize(
    ("identifiers", "field"),
    [
        ({"email": "not-an-address"}, "identifiers.email"),
        ({"phone": "12"}, "identifiers.phone"),
        ({"Bad Kind": "x"}, "identifiers.Bad Kind"),
        ({"user_id": ""}, "identifiers.user_id"),
    ],
)
def test_unusable_identifiers_name_the_field(identifiers: dict[str, str], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        normalize_identifiers(identifiers, "US")
    assert caught.value.field == field


def test_lenient_identifiers_skip_what_is_unusable() -> None:
    found = lenient_identifiers({"email": "nope", "phone": "+1 415 555 0100"}, "US")
    assert found == {"phone": "+14155550100"}


def test_touchpoint_refuses_naive_times() -> None:
    with pytest.raises(ValueError, match="timezone"):
        Touchpoint.model_validate(
            {
                "message_id": "m",
                "channel": "web",
                "type": "page.viewed",
                "occurred_at": datetime(2026, 1, 1),
                "identifiers": {"user_id": "u"},
            }
        )


def test_segment_event_names_become_past_tense_types() -> None:
    assert event_type("Order Completed") == "order.completed"
    assert event_type("Checkout Step Viewed") == "checkout_step.viewed"
    assert event_type("signup") == "custom.signup"


def test_segment_clock_skew_is_corrected() -> None:
    received = datetime(2026, 11, 20, 12, 0, 0, tzinfo=UTC)
    message = {
        "type": "track",
        "event": "Order Completed",
        "userId": "u1",
        "originalTimestamp": "2026-11-20T11:00:00Z",
        "sentAt": "2026-11-20T11:00:30Z",  # client clock 1 h behind; sent 30 s after the event
    }
    touchpoint = to_touchpoint(message, received_at=received, default_region="US")
    assert touchpoint["occurred_at"] == received - timedelta(seconds=30)


def test_segment_identify_traits_give_identifiers() -> None:
    message = {
        "type": "identify",
        "anonymousId": "anon-1",
        "traits": {"email": "A@B.co", "phone": "(415) 555-0100"},
    }
    touchpoint = to_touchpoint(message, received_at=datetime.now(UTC), default_region="US")
    assert touchpoint["identifiers"] == {
        "anonymous_id": "anon-1",
        "email": "a@b.co",
        "phone": "+14155550100",
    }
    assert touchpoint["type"] == "profile.identified"


@pytest.mark.parametrize(
    ("message", "field"),
    [
        ({"type": "track", "event": "x y"}, "userId"),
        ({"type": "track", "userId": "u"}, "event"),
        ({"type": "track", "userId": "u", "event": "a b", "properties": "x"}, "properties"),
        ({"type": "track", "userId": "u", "event": "a b", "timestamp": "yesterday"}, "timestamp"),
        ({"type": "track", "userId": ["u"], "event": "a b"}, "userId"),
        ({"type": "nope", "userId": "u"}, "type"),
    ],
)
def test_segment_errors_name_segment_fields(message: dict[str, object], field: str) -> None:
    with pytest.raises(SegmentMessageError) as caught:
        to_touchpoint(message, received_at=datetime.now(UTC), default_region="US")
    assert caught.value.field == field
