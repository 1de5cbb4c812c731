"""sms.send through the real ``twilio`` client, talking to a local stand-in of Twilio's API.

The stand-in (tests/twilio_api.py) checks the Basic auth the client sends and records the
form fields, so these tests see the exact request Twilio would get.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from outbound import drain, event, events_of, profile_of, queue, runtime_for, view
from smtp_server import free_port
from twilio_api import TwilioApi, new_account

from personalization import consent
from pipeline import Database
from workers.delivery import deliver
from workers.runtime import Runtime

SENDER = "+15005550006"


@pytest.fixture
def api() -> Iterator[TwilioApi]:
    sid, token = new_account()
    with TwilioApi(sid, token) as server:
        yield server


def twilio_env(api: TwilioApi, **more: str) -> dict[str, str]:
    return {
        "ECRM_TWILIO_ACCOUNT_SID": api.account_sid,
        "ECRM_TWILIO_AUTH_TOKEN": api.auth_token,
        "ECRM_TWILIO_FROM": SENDER,
        "ECRM_TWILIO_API_URL": api.url,
        **more,
    }


def sms(runtime: Runtime, to: str, text: str = "Your table is ready") -> str:
    return queue(runtime, {"kind": "sms.send", "to": to, "text": text})


def test_sms_is_sent_by_the_real_client_and_lands_on_the_profile(
    any_db: Database, tmp_path: Path, api: TwilioApi
) -> None:
    runtime = runtime_for(
        any_db, tmp_path, **twilio_env(api, ECRM_PUBLIC_URL="https://hub.example.com/")
    )
    action_id = sms(runtime, "(415) 555-0100")

    assert deliver(runtime, action_id) == "sent"

    [request] = api.messages()
    assert request.path == f"/2010-04-01/Accounts/{api.account_sid}/Messages.json"
    assert (request.basic_user, request.basic_password) == (api.account_sid, api.auth_token)
    assert request.form == {
        "To": "+14155550100",
        "From": SENDER,
        "Body": "Your table is ready",
        "StatusCallback": "https://hub.example.com/v1/twilio/status",
    }
    shown = view(runtime, action_id)
    assert shown["status"] == "sent" and shown["provider_id"].startswith("SM")
    drain(any_db)
    record = event(any_db, f"action:{action_id}")
    assert record is not None
    assert (record["type"], record["channel"]) == ("sms.sent", "sms")
    assert record["identifiers"] == {"phone": "+14155550100"}
    assert record["properties"]["provider_id"] == shown["provider_id"]
    assert record["properties"]["twilio_status"] == "queued"
    assert record["properties"]["text"] == "Your table is ready"
    assert record["profile_id"] == profile_of(any_db, "phone", "+14155550100") is not None


def test_messaging_service_sender(sqlite_db: Database, tmp_path: Path, api: TwilioApi) -> None:
    service = "MG" + "0" * 32
    runtime = runtime_for(sqlite_db, tmp_path, **twilio_env(api, ECRM_TWILIO_FROM=service))
    assert deliver(runtime, sms(runtime, "+14155550101")) == "sent"
    [request] = api.messages()
    assert request.form == {
        "To": "+14155550101",
        "MessagingServiceSid": service,
        "Body": "Your table is ready",
    }


@pytest.mark.parametrize("status", [500, 503, 429])
def test_server_trouble_is_retried(
    sqlite_db: Database, tmp_path: Path, api: TwilioApi, status: int
) -> None:
    runtime = runtime_for(sqlite_db, tmp_path, **twilio_env(api))
    api.fail_next(status, message="Service unavailable")
    action_id = sms(runtime, "+14155550102")

    assert deliver(runtime, action_id) == "queued"
    shown = view(runtime, action_id)
    assert shown["attempts"] == 1 and f"Twilio answered {status}" in shown["last_error"]
    assert deliver(runtime, action_id, now=datetime.fromisoformat(shown["due_at"])) == "sent"
    assert [r.answered for r in api.messages()] == [status, 201]
    assert view(runtime, action_id)["status"] == "sent"


def test_invalid_number_fails_for_good(any_db: Database, tmp_path: Path, api: TwilioApi) -> None:
    runtime = runtime_for(any_db, tmp_path, **twilio_env(api))
    api.fail_next(400, code=21211, message="Invalid 'To' Phone Number")
    action_id = sms(runtime, "+14155550103")

    assert deliver(runtime, action_id) == "failed"

    shown = view(runtime, action_id)
    assert shown["last_error"] == (
        "Twilio answered 400: Unable to create record: Invalid 'To' Phone Number"
        " (Twilio error 21211)"
    )
    drain(any_db)
    [failure] = events_of(any_db, action_id)
    assert failure["type"] == "sms.send_failed" and failure["status"] == "processed"
    assert failure["properties"]["error"] == shown["last_error"]
    assert "consent" not in failure["properties"]
    with any_db.read() as session:
        assert consent.status_of(session, "default", "sms", "+14155550103") is None


def test_unsubscribed_recipient_records_the_opt_out(
    any_db: Database, tmp_path: Path, api: TwilioApi
) -> None:
    runtime = runtime_for(any_db, tmp_path, **twilio_env(api))
    api.fail_next(400, code=21610, message="Attempt to send to unsubscribed recipient")
    first = sms(runtime, "+14155550104")

    assert deliver(runtime, first) == "failed"
    with any_db.read() as session:
        decided = consent.status_of(session, "default", "sms", "+14155550104")
        assert decided is not None and decided.status == "opted_out"
    second = sms(runtime, "+14155550104", "Another try")
    assert deliver(runtime, second) == "suppressed"
    assert "sms consent" in view(runtime, second)["last_error"]
    assert len(api.messages()) == 1  # the second never reached Twilio

    drain(any_db)  # the failure record carries the opt-out, so the log can rebuild it
    [failure] = events_of(any_db, first)
    assert failure["properties"]["consent"]["status"] == "opted_out"
    with any_db.read() as session:
        assert not consent.allowed(session, "default", "sms", "+14155550104")


def test_unreachable_twilio_is_transient(sqlite_db: Database, tmp_path: Path) -> None:
    sid, token = new_account()
    runtime = runtime_for(
        sqlite_db,
        tmp_path,
        ECRM_TWILIO_ACCOUNT_SID=sid,
        ECRM_TWILIO_AUTH_TOKEN=token,
        ECRM_TWILIO_FROM=SENDER,
        ECRM_TWILIO_API_URL=f"http://127.0.0.1:{free_port()}",
    )
    action_id = sms(runtime, "+14155550105")
    assert deliver(runtime, action_id) == "queued"
    assert "cannot reach Twilio" in view(runtime, action_id)["last_error"]


def test_unconfigured_sms_fails_visibly(sqlite_db: Database, tmp_path: Path) -> None:
    runtime = runtime_for(sqlite_db, tmp_path)
    action_id = sms(runtime, "+14155550106")
    assert deliver(runtime, action_id) == "failed"
    error = view(runtime, action_id)["last_error"]
    assert "ECRM_TWILIO_ACCOUNT_SID" in error and "ECRM_TWILIO_FROM" in error
    assert [e["type"] for e in events_of(sqlite_db, action_id)] == ["sms.send_failed"]
