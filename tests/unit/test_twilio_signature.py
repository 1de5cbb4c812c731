"""Twilio request signatures (with the real ``twilio`` validator), form parsing and TwiML."""

from __future__ import annotations

import base64
import hashlib
import hmac
import xml.etree.ElementTree as ET
from pathlib import Path
from urllib.parse import urlencode

import pytest
from twilio.request_validator import RequestValidator

from connectors.twilio import FormParams, answer_call, empty_messaging, is_genuine, parse_form
from connectors.twilio.signature import MAX_FIELDS, signed_url
from pipeline import SettingsError, ValidationError, load_settings

TOKEN = "12345678901234567890123456789012"
URL = "https://crm.example.com/v1/twilio/sms?source=main"


def twilio_signature(url: str, pairs: list[tuple[str, str]]) -> str:
    """Twilio's documented algorithm, written out: URL + each name+value, sorted; HMAC-SHA1."""
    data = url + "".join(name + value for name, value in sorted(pairs))
    digest = hmac.new(TOKEN.encode(), data.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def test_parse_form_keeps_repeated_and_empty_values() -> None:
    body = urlencode(
        [("Body", "café & crème"), ("Tag", "b"), ("Tag", "a"), ("CallerName", "")]
    ).encode()
    params = parse_form(body)
    assert params == {"Body": ["café & crème"], "Tag": ["b", "a"], "CallerName": [""]}
    assert params.getlist("Tag") == ["b", "a"] and params.getlist("Nope") == []
    assert params.first() == {"Body": "café & crème", "Tag": "b", "CallerName": ""}


def test_parse_form_refuses_what_twilio_never_sends() -> None:
    with pytest.raises(ValidationError) as caught:
        parse_form(b"Body=%FF%FE&From=x\xff")
    assert caught.value.field == "body"
    with pytest.raises(ValidationError):
        parse_form(urlencode([(f"F{n}", "x") for n in range(MAX_FIELDS + 1)]).encode())


def test_genuine_signature_validates() -> None:
    pairs = [("From", "+14155550123"), ("Body", "STOP"), ("CallerName", "")]
    signature = RequestValidator(TOKEN).compute_signature(URL, dict(pairs))
    assert signature == twilio_signature(URL, pairs)
    params = parse_form(urlencode(pairs).encode())
    assert is_genuine(TOKEN, URL, params, signature)


def test_repeated_parameters_are_all_signed() -> None:
    # A plain dict keeps one value per name: the validator would then sign another string.
    pairs = [("Tag", "b"), ("Tag", "a"), ("From", "+14155550123")]
    signature = twilio_signature(URL, pairs)
    params = parse_form(urlencode(pairs).encode())
    assert is_genuine(TOKEN, URL, params, signature)
    assert not RequestValidator(TOKEN).validate(URL, params.first(), signature)


@pytest.mark.parametrize(
    ("url", "pairs", "token"),
    [
        (URL, [("From", "+14155550123"), ("Body", "START")], TOKEN),  # body changed
        (
            "https://crm.example.com/v1/twilio/sms",
            [("From", "+14155550123"), ("Body", "STOP")],
            TOKEN,
        ),
        (
            "http://127.0.0.1:8000/v1/twilio/sms?source=main",
            [("From", "+14155550123"), ("Body", "STOP")],
            TOKEN,
        ),
        (URL, [("From", "+14155550123"), ("Body", "STOP")], "another-token-0123456789abcdef"),
    ],
)
def test_any_difference_fails(url: str, pairs: list[tuple[str, str]], token: str) -> None:
    signature = twilio_signature(URL, [("From", "+14155550123"), ("Body", "STOP")])
    assert not is_genuine(token, url, parse_form(urlencode(pairs).encode()), signature)


def test_missing_signature_fails() -> None:
    assert not is_genuine(TOKEN, URL, FormParams(), "")


def test_default_port_is_accepted_either_way() -> None:
    signature = twilio_signature("https://crm.example.com:443/v1/twilio/sms", [])
    assert is_genuine(TOKEN, "https://crm.example.com/v1/twilio/sms", FormParams(), signature)


def test_signed_url_behind_a_proxy_is_the_public_one() -> None:
    own = "http://127.0.0.1:8000/v1/twilio/status?agent=%2B1555"
    assert signed_url(None, own, "/v1/twilio/status", "agent=%2B1555") == own
    assert (
        signed_url("https://crm.example.com/hub", own, "/v1/twilio/status", "agent=%2B1555")
        == "https://crm.example.com/hub/v1/twilio/status?agent=%2B1555"
    )
    assert signed_url("https://crm.example.com", own, "/v1/twilio/sms", "") == (
        "https://crm.example.com/v1/twilio/sms"
    )


def test_call_is_greeted_and_forwarded_with_the_outcome_coming_back() -> None:
    xml = answer_call("Hello & welcome <3", "+15005550006", record=True)
    root = ET.fromstring(xml)
    assert root.tag == "Response"
    say, dial = list(root)
    assert (say.tag, say.text) == ("Say", "Hello & welcome <3")
    assert dial.tag == "Dial"
    assert dial.get("action") == "status?agent=%2B15005550006"
    assert dial.get("method") == "POST"
    assert dial.get("record") == "record-from-answer-dual"
    [number] = list(dial)
    assert (number.tag, number.text) == ("Number", "+15005550006")


def test_call_without_an_agent_is_greeted_and_hung_up() -> None:
    root = ET.fromstring(answer_call("We are closed.", None))
    assert [child.tag for child in root] == ["Say", "Hangup"]
    no_record = ET.fromstring(answer_call("Hi", "+15005550006", record=False))
    assert no_record.find("Dial") is not None and no_record.find("Dial").get("record") is None  # type: ignore[union-attr]


def test_sms_gets_no_reply() -> None:
    root = ET.fromstring(empty_messaging())
    assert root.tag == "Response" and len(root) == 0


def test_record_calls_setting(tmp_path: Path) -> None:
    base = {"ECRM_HOME": str(tmp_path)}
    assert load_settings(base).twilio_record_calls is False
    assert load_settings({**base, "ECRM_TWILIO_RECORD_CALLS": "yes"}).twilio_record_calls is True
    assert load_settings({**base, "ECRM_TWILIO_RECORD_CALLS": "0"}).twilio_record_calls is False
    with pytest.raises(SettingsError, match="ECRM_TWILIO_RECORD_CALLS"):
        load_settings({**base, "ECRM_TWILIO_RECORD_CALLS": "maybe"})
