"""Channel consent derived from processed events (the real pipeline), and what it blocks.

An opt-out travels as any event does: ingest, relay, batch processing; then an sms.send to
that number is suppressed before it reaches Twilio. The latest decision by occurred_at
wins, whatever order events arrive or are processed in.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from outbound import WS, drain, event, queue, runtime_for, store, view
from twilio_api import TwilioApi, new_account

from personalization import consent
from pipeline import Database
from workers.delivery import deliver

T0 = datetime(2026, 11, 3, 12, 0, tzinfo=UTC)
PHONE = "+14155550199"


@pytest.fixture
def api() -> Iterator[TwilioApi]:
    sid, token = new_account()
    with TwilioApi(sid, token) as server:
        yield server


def keyword(message_id: str, status: str, minutes: int, phone: str = PHONE) -> dict[str, Any]:
    """An inbound SMS keyword as the Twilio webhook connector records it."""
    word = "STOP" if status == "opted_out" else "START"
    return {
        "message_id": message_id,
        "channel": "sms",
        "type": "sms.received",
        "occurred_at": T0 + timedelta(minutes=minutes),
        "source": "twilio",
        "identifiers": {"phone": phone},
        "properties": {
            "body": word,
            "keyword": word,
            "consent": {"channel": "sms", "status": status, "keyword": word},
        },
    }


def decided(db: Database, channel: str = "sms", address: str = PHONE) -> tuple[str, str] | None:
    with db.read() as session:
        found = consent.status_of(session, WS, channel, address)
        return (found.status, str(found.message_id)) if found else None


def test_opt_out_suppresses_sms_and_a_later_opt_in_allows_it(
    any_db: Database, tmp_path: Path, api: TwilioApi
) -> None:
    runtime = runtime_for(
        any_db,
        tmp_path,
        ECRM_TWILIO_ACCOUNT_SID=api.account_sid,
        ECRM_TWILIO_AUTH_TOKEN=api.auth_token,
        ECRM_TWILIO_FROM="+15005550006",
        ECRM_TWILIO_API_URL=api.url,
    )
    store(any_db, [keyword("twilio:sms:stop", "opted_out", 0)])
    drain(any_db)
    assert decided(any_db) == ("opted_out", "twilio:sms:stop")

    blocked = queue(runtime, {"kind": "sms.send", "to": "415-555-0199", "text": "Sale!"})
    assert deliver(runtime, blocked) == "suppressed"
    assert "opted out" in view(runtime, blocked)["last_error"]
    assert api.messages() == []

    store(any_db, [keyword("twilio:sms:start", "opted_in", 30)])
    drain(any_db)
    assert decided(any_db) == ("opted_in", "twilio:sms:start")
    allowed = queue(runtime, {"kind": "sms.send", "to": PHONE, "text": "Welcome back"})
    assert deliver(runtime, allowed) == "sent"
    assert [r.form["To"] for r in api.messages()] == [PHONE]


def test_an_older_opt_in_arriving_late_keeps_the_newer_opt_out(any_db: Database) -> None:
    store(any_db, [keyword("stop-at-10", "opted_out", 10)])
    drain(any_db)
    store(any_db, [keyword("start-at-5", "opted_in", 5)])  # a late backfill
    drain(any_db)
    assert decided(any_db) == ("opted_out", "stop-at-10")
    with any_db.read() as session:
        assert not consent.allowed(session, WS, "sms", PHONE)
    assert event(any_db, "start-at-5")["status"] == "processed"  # type: ignore[index]


def test_within_one_batch_the_latest_decision_wins_and_a_tie_opts_out(any_db: Database) -> None:
    other = "+14155550188"
    store(
        any_db,
        [
            keyword("b-stop-20", "opted_out", 20),
            keyword("b-start-25", "opted_in", 25),
            keyword("b-start-15", "opted_in", 15),
            keyword("tie-start", "opted_in", 40, other),
            keyword("tie-stop", "opted_out", 40, other),
        ],
    )
    drain(any_db)
    assert decided(any_db) == ("opted_in", "b-start-25")
    assert decided(any_db, address=other) == ("opted_out", "tie-stop")
    store(any_db, [keyword("tie-start-again", "opted_in", 40, other)])
    drain(any_db)
    assert decided(any_db, address=other) == ("opted_out", "tie-stop")


def test_email_consent_and_malformed_consent(any_db: Database) -> None:
    store(
        any_db,
        [
            {
                "message_id": "unsub-1",
                "channel": "web",
                "type": "email.unsubscribed",
                "occurred_at": T0,
                "identifiers": {"user_id": "u1", "email": "Una@Example.com"},
                "properties": {"consent": {"channel": "email", "status": "opted_out"}},
            },
            {
                "message_id": "odd-1",
                "channel": "web",
                "type": "preferences.updated",
                "occurred_at": T0,
                "identifiers": {"user_id": "u2", "email": "u2@example.com"},
                "properties": {"consent": {"channel": "fax", "status": "opted_out"}},
            },
            {
                "message_id": "odd-2",
                "channel": "web",
                "type": "preferences.updated",
                "occurred_at": T0,
                "identifiers": {"user_id": "u3"},  # an sms decision without a phone
                "properties": {"consent": {"channel": "sms", "status": "opted_out"}},
            },
        ],
    )
    drain(any_db)
    assert decided(any_db, "email", "una@example.com") == ("opted_out", "unsub-1")
    assert decided(any_db, "email", "u2@example.com") is None
    # a malformed consent is skipped, the event itself is processed normally
    assert [event(any_db, m)["status"] for m in ("odd-1", "odd-2")] == ["processed"] * 2  # type: ignore[index]
    with any_db.read() as session:
        assert consent.allowed(session, WS, "email", "u2@example.com")  # unknown: allowed
        assert not consent.allowed(session, WS, "email", "una@example.com")
