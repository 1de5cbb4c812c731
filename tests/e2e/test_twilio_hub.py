"""Twilio's webhooks against a running hub (``ecrm run``), signed with the real validator.

The hub is behind a "proxy": Twilio calls ``https://crm.example.test/hub``, so every
signature is computed over that public URL, never over the local one. It checks the
AccountSid and forwards calls to an agent. (Own-URL signatures, no agent, no auth token and
a database that is down: tests/integration/test_twilio_routes.py.) The hub starts once for
the module; every test uses fresh SIDs and phone numbers, so tests never see each other.
"""

from __future__ import annotations

import random
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from conftest import Hub
from twilio.request_validator import RequestValidator

from pipeline import load_settings

TOKEN = "twilio_test_auth_token_0123456789"
ACCOUNT = "AC" + "5" * 32
PUBLIC = "https://crm.example.test/hub"
AGENT = "+15005550006"
PROBLEM = "application/problem+json"
FORM = "application/x-www-form-urlencoded"
Params = list[tuple[str, str]]


class MultiForm(dict[str, list[str]]):
    """What Django's QueryDict offers the validator: every value of a repeated name."""

    def getlist(self, name: str) -> list[str]:
        return self[name]


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    home = tmp_path_factory.mktemp("twilio") / "home"
    settings = load_settings({"ECRM_HOME": str(home)})
    env = {
        "ECRM_TWILIO_AUTH_TOKEN": TOKEN,
        "ECRM_TWILIO_ACCOUNT_SID": ACCOUNT,
        "ECRM_PUBLIC_URL": PUBLIC + "/",
        "ECRM_TWILIO_FORWARD_TO": AGENT,
        "ECRM_TWILIO_GREETING": "Welcome to Shop & Co. One moment please.",
    }
    hub = Hub(home, settings.database_url, settings.broker_url, extra_env=env)
    try:
        hub.launch(("run",))
        yield hub
    finally:
        hub.stop()


@pytest.fixture
def admin(hub: Hub) -> Iterator[httpx.Client]:
    with hub.admin() as client:
        yield client


def sid(prefix: str) -> str:
    return prefix + uuid.uuid4().hex


def phone() -> str:
    """A fresh North American number (about 10**9 of them: tests never share one)."""
    return f"+1{random.randint(201, 989)}{random.randint(200, 999)}{random.randrange(10**4):04d}"


def send(
    hub: Hub,
    path: str,
    params: Params,
    *,
    query: str = "",
    public: str | None = PUBLIC,
    signed_url: str | None = None,
    token: str = TOKEN,
    signature: str | None = None,
) -> httpx.Response:
    """POST ``params`` to ``path`` as Twilio would, signed over the URL Twilio called."""
    target = f"{path}?{query}" if query else path
    url = signed_url or (public or hub.base_url) + target
    form = MultiForm()
    for name, value in params:
        form.setdefault(name, []).append(value)
    if signature is None:
        signature = RequestValidator(token).compute_signature(url, form)
    headers = {"Content-Type": f"{FORM}; charset=UTF-8"}
    if signature:
        headers["X-Twilio-Signature"] = signature
    return httpx.post(hub.base_url + target, content=urlencode(params), headers=headers, timeout=30)


def sms(sender: str, body: str, message_sid: str | None = None, **extra: str) -> Params:
    params = [
        ("ToCountry", "US"),
        ("SmsMessageSid", message_sid or ""),
        ("NumMedia", "0"),
        ("SmsSid", message_sid or ""),
        ("SmsStatus", "received"),
        ("Body", body),
        ("FromCountry", "US"),
        ("To", "+15005550001"),
        ("NumSegments", "1"),
        ("MessageSid", message_sid or sid("SM")),
        ("AccountSid", ACCOUNT),
        ("From", sender),
        ("ApiVersion", "2010-04-01"),
    ]
    return [*params, *extra.items()]


def call(caller: str, call_sid: str, status: str = "ringing", **extra: str) -> Params:
    params = {
        "AccountSid": ACCOUNT,
        "ApiVersion": "2010-04-01",
        "CallSid": call_sid,
        "CallStatus": status,
        "Called": "+15005550001",
        "Caller": caller,
        "Direction": "inbound",
        "From": caller,
        "To": "+15005550001",
        "CallerName": "",
    }
    return list({**params, **extra}.items())


def processed(admin: httpx.Client, hub: Hub, message_id: str, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        response = admin.get(f"/v1/events/{message_id}")
        assert response.status_code == 200, response.text
        view = response.json()
        assert view["status"] != "failed", view
        if view["status"] == "processed":
            return view
        assert time.monotonic() < deadline, f"{message_id} not processed\n{hub.logs()}"
        time.sleep(0.2)


def stored(admin: httpx.Client, message_id: str) -> bool:
    response = admin.get(f"/v1/events/{message_id}")
    assert response.status_code in (200, 404), response.text
    return response.status_code == 200


def is_empty_twiml(response: httpx.Response) -> bool:
    root = ET.fromstring(response.text)
    return response.headers["content-type"].startswith("text/xml") and (
        root.tag == "Response" and len(root) == 0
    )


def test_sms_reaches_the_senders_profile_once_despite_retries(
    hub: Hub, admin: httpx.Client
) -> None:
    sender, message_sid = phone(), sid("SM")
    first = send(hub, "/v1/twilio/sms", sms(sender, "Is my order ready?", message_sid))
    assert first.status_code == 200, first.text
    assert is_empty_twiml(first)
    view = processed(admin, hub, f"twilio:sms:{message_sid}")
    assert (view["channel"], view["type"], view["source"]) == ("sms", "sms.received", "twilio")
    assert view["identifiers"] == {"phone": sender}
    assert view["properties"]["body"] == "Is my order ready?"
    assert view["context"] == {"twilio": {"account_sid": ACCOUNT, "api_version": "2010-04-01"}}
    assert TOKEN not in str(view)

    retry = send(hub, "/v1/twilio/sms", sms(sender, "Is my order ready?", message_sid))
    assert retry.status_code == 200 and retry.text == first.text  # Twilio retried
    stop_sid = sid("SM")
    assert send(hub, "/v1/twilio/sms", sms(sender, "Stop", stop_sid)).status_code == 200
    processed(admin, hub, f"twilio:sms:{stop_sid}")

    profile = admin.get("/v1/profiles", params={"identifier": f"phone:{sender}"})
    assert profile.status_code == 200, profile.text
    assert profile.json()["id"] == view["profile_id"]
    assert profile.json()["event_count"] == 2  # the retry was not counted
    assert profile.json()["channels"] == {"sms": 2}


def test_stop_and_start_carry_the_consent_change(hub: Hub, admin: httpx.Client) -> None:
    sender, stop, start, help_ = phone(), sid("SM"), sid("SM"), sid("SM")
    for message_sid, body in ((stop, "STOP"), (start, " unstop "), (help_, "help")):
        response = send(hub, "/v1/twilio/sms", sms(sender, body, message_sid))
        assert response.status_code == 200, response.text
    stopped = processed(admin, hub, f"twilio:sms:{stop}")["properties"]
    assert stopped["keyword"] == "STOP"
    assert stopped["consent"] == {"channel": "sms", "status": "opted_out", "keyword": "STOP"}
    started = processed(admin, hub, f"twilio:sms:{start}")["properties"]
    assert started["consent"] == {"channel": "sms", "status": "opted_in", "keyword": "START"}
    helped = processed(admin, hub, f"twilio:sms:{help_}")["properties"]
    assert helped["keyword"] == "HELP" and "consent" not in helped


def test_forged_or_unsigned_requests_store_nothing(hub: Hub, admin: httpx.Client) -> None:
    sender = phone()
    attempts = {
        "bad": dict(signature="bm90IGEgc2lnbmF0dXJl"),
        "missing": dict(signature=""),
        "other token": dict(token="someone_elses_token_0123456789"),
        # behind the proxy Twilio signs the public URL; the local URL must not validate
        "local url": dict(public=None),
    }
    for name, options in attempts.items():
        message_sid = sid("SM")
        response = send(hub, "/v1/twilio/sms", sms(sender, "hi", message_sid), **options)
        assert response.status_code == 403, (name, response.text)
        assert response.headers["content-type"] == PROBLEM
        assert response.json()["status"] == 403
        assert not stored(admin, f"twilio:sms:{message_sid}"), name
    # a body changed after signing
    message_sid = sid("SM")
    genuine = sms(sender, "hi", message_sid)
    signature = RequestValidator(TOKEN).compute_signature(PUBLIC + "/v1/twilio/sms", dict(genuine))
    tampered = [(k, "STOP" if k == "Body" else v) for k, v in genuine]
    response = send(hub, "/v1/twilio/sms", tampered, signature=signature)
    assert response.status_code == 403
    assert not stored(admin, f"twilio:sms:{message_sid}")
    assert admin.get("/v1/profiles", params={"identifier": f"phone:{sender}"}).status_code == 404


def test_another_twilio_account_is_refused(hub: Hub, admin: httpx.Client) -> None:
    message_sid = sid("SM")
    params = [
        (k, "AC" + "6" * 32 if k == "AccountSid" else v) for k, v in sms(phone(), "x", message_sid)
    ]
    response = send(hub, "/v1/twilio/sms", params)
    assert response.status_code == 403 and response.json()["field"] == "AccountSid"
    assert not stored(admin, f"twilio:sms:{message_sid}")


def test_repeated_parameters_validate(hub: Hub, admin: httpx.Client) -> None:
    message_sid = sid("SM")
    params = [*sms(phone(), "two tags", message_sid), ("Tag", "b"), ("Tag", "a")]
    response = send(hub, "/v1/twilio/sms", params)
    assert response.status_code == 200, response.text
    assert stored(admin, f"twilio:sms:{message_sid}")


def test_invalid_forms_name_the_field(hub: Hub, admin: httpx.Client) -> None:
    no_sid = [(k, v) for k, v in sms(phone(), "x", "") if k != "MessageSid"]
    response = send(hub, "/v1/twilio/sms", no_sid)
    assert response.status_code == 400 and response.json()["field"] == "MessageSid"
    message_sid = sid("SM")
    no_from = [(k, v) for k, v in sms(phone(), "x", message_sid) if k != "From"]
    response = send(hub, "/v1/twilio/sms", no_from)
    assert response.status_code == 400 and response.json()["field"] == "From"
    assert response.headers["content-type"] == PROBLEM
    assert not stored(admin, f"twilio:sms:{message_sid}")
    huge = sms(phone(), "x" * 70_000, sid("SM"))
    assert send(hub, "/v1/twilio/sms", huge).status_code == 413


def test_incoming_call_is_greeted_forwarded_and_completed(hub: Hub, admin: httpx.Client) -> None:
    caller, call_sid = phone(), sid("CA")
    answer = send(hub, "/v1/twilio/voice", call(caller, call_sid, CallerName="JANE DOE"))
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/xml")
    root = ET.fromstring(answer.text)
    say, dial = list(root)
    assert (say.tag, say.text) == ("Say", "Welcome to Shop & Co. One moment please.")
    assert dial.tag == "Dial" and [n.text for n in dial.iter("Number")] == [AGENT]
    action = dial.get("action")
    assert action == "status?agent=%2B15005550006"
    started = processed(admin, hub, f"twilio:call:{call_sid}:started")
    assert (started["channel"], started["type"]) == ("call", "call.started")
    assert started["identifiers"] == {"phone": caller}
    assert started["properties"]["caller_name"] == "JANE DOE"

    # Twilio resolves the relative action against the URL it called and signs the result.
    dialed = call(
        caller,
        call_sid,
        "in-progress",
        DialCallStatus="completed",
        DialCallSid=sid("CA"),
        DialCallDuration="73",
        RecordingUrl="https://api.twilio.com/2010-04-01/Accounts/AC/Recordings/RE1",
    )
    outcome = send(hub, "/v1/twilio/status", dialed, query=action.partition("?")[2])
    assert outcome.status_code == 200 and is_empty_twiml(outcome)
    # ... and the number's own status callback for the same call is the same event
    final = call(caller, call_sid, "completed", CallDuration="80")
    assert send(hub, "/v1/twilio/status", final).status_code == 200
    completed = processed(admin, hub, f"twilio:call:{call_sid}:completed")
    properties = completed["properties"]
    assert completed["type"] == "call.completed" and completed["identifiers"] == {"phone": caller}
    assert (properties["duration"], properties["disposition"]) == (73, "answered")
    assert properties["agent"] == AGENT and properties["direction"] == "inbound"
    assert properties["recording_url"].endswith("/RE1")
    assert completed["profile_id"] == started["profile_id"]
    profile = admin.get("/v1/profiles", params={"identifier": f"phone:{caller}"}).json()
    assert profile["event_count"] == 2 and profile["channels"] == {"call": 2}


def test_the_agent_in_the_action_url_cannot_be_forged(hub: Hub, admin: httpx.Client) -> None:
    call_sid = sid("CA")
    params = call(phone(), call_sid, "in-progress", DialCallStatus="busy")
    signature = RequestValidator(TOKEN).compute_signature(
        PUBLIC + "/v1/twilio/status?agent=%2B15005550006", dict(params)
    )
    forged = send(
        hub, "/v1/twilio/status", params, query="agent=%2B19995550000", signature=signature
    )
    assert forged.status_code == 403
    assert not stored(admin, f"twilio:call:{call_sid}:completed")


def test_status_callbacks_only_store_outcomes(hub: Hub, admin: httpx.Client) -> None:
    caller, busy_call, ringing_call = phone(), sid("CA"), sid("CA")
    assert send(hub, "/v1/twilio/status", call(caller, ringing_call, "ringing")).status_code == 200
    response = send(hub, "/v1/twilio/status", call(caller, busy_call, "busy", CallDuration="0"))
    assert response.status_code == 200 and is_empty_twiml(response)
    busy = processed(admin, hub, f"twilio:call:{busy_call}:completed")
    assert busy["properties"]["disposition"] == "busy" and busy["properties"]["duration"] == 0
    assert not stored(admin, f"twilio:call:{ringing_call}:completed")

    customer, delivered, failed, sent = phone(), sid("SM"), sid("SM"), sid("SM")
    for message_sid, status, extra in (
        (sent, "sent", {}),
        (delivered, "delivered", {}),
        (failed, "undelivered", {"ErrorCode": "30003"}),
    ):
        params = [
            ("AccountSid", ACCOUNT),
            ("ApiVersion", "2010-04-01"),
            ("MessageSid", message_sid),
            ("SmsSid", message_sid),
            ("MessageStatus", status),
            ("SmsStatus", status),
            ("From", "+15005550001"),
            ("To", customer),
            *extra.items(),
        ]
        assert send(hub, "/v1/twilio/status", params).status_code == 200
    ok = processed(admin, hub, f"twilio:sms:{delivered}:delivered")
    assert ok["type"] == "sms.delivered" and ok["identifiers"] == {"phone": customer}
    bad = processed(admin, hub, f"twilio:sms:{failed}:undelivered")
    assert bad["type"] == "sms.failed" and bad["properties"]["error_code"] == "30003"
    assert not stored(admin, f"twilio:sms:{sent}:sent")


def test_withheld_caller_is_recorded_not_refused(hub: Hub, admin: httpx.Client) -> None:
    call_sid = sid("CA")
    answer = send(hub, "/v1/twilio/voice", call("+266696687", call_sid))
    assert answer.status_code == 200, answer.text
    view = processed(admin, hub, f"twilio:call:{call_sid}:started")
    assert view["identifiers"] == {"anonymous_id": f"twilio-call:{call_sid}"}
