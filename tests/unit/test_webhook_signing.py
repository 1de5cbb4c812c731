"""Signatures checked by the real ``standardwebhooks`` library, as a consumer would."""

from __future__ import annotations

import base64
import time
from datetime import UTC, datetime

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from connectors.webhooks import signing

BODY = b'{"type":"profile.updated","data":{"id":"p_1","name":"Zo\xc3\xab"}}'


def test_new_secret_is_whsec_and_32_random_bytes() -> None:
    first, second = signing.new_secret(), signing.new_secret()
    assert first.startswith("whsec_") and first != second
    assert len(base64.b64decode(first.removeprefix("whsec_"), validate=True)) == 32


def test_message_ids_are_time_ordered() -> None:
    ids = [signing.new_message_id() for _ in range(50)]
    assert all(i.startswith("msg_") and len(i) == 36 for i in ids)
    assert ids == sorted(ids) and len(set(ids)) == 50


def test_the_library_verifies_our_headers_unchanged() -> None:
    secret, msg_id, now = signing.new_secret(), signing.new_message_id(), int(time.time())
    sent = signing.headers([secret], msg_id, now, BODY)
    assert set(sent) == {"webhook-id", "webhook-timestamp", "webhook-signature"}
    assert sent["webhook-id"] == msg_id and sent["webhook-timestamp"] == str(now)
    assert Webhook(secret).verify(BODY, sent) == {
        "type": "profile.updated",
        "data": {"id": "p_1", "name": "Zoë"},
    }
    assert signing.verify([secret], sent, BODY)


def test_during_rotation_either_secret_verifies() -> None:
    old, new, now = signing.new_secret(), signing.new_secret(), int(time.time())
    sent = signing.headers([old, new], "msg_rotation", now, BODY)
    signatures = sent["webhook-signature"].split(" ")
    assert len(signatures) == 2 and all(s.startswith("v1,") for s in signatures)
    Webhook(old).verify(BODY, sent)
    Webhook(new).verify(BODY, sent)
    with pytest.raises(WebhookVerificationError):
        Webhook(signing.new_secret()).verify(BODY, sent)
    assert signing.verify([old], sent, BODY) and signing.verify([new], sent, BODY)
    assert not signing.verify([signing.new_secret()], sent, BODY)


def test_tampered_body_is_refused() -> None:
    secret, now = signing.new_secret(), int(time.time())
    sent = signing.headers([secret], "msg_tamper", now, BODY)
    tampered = BODY.replace(b"p_1", b"p_2")
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(tampered, sent)
    assert not signing.verify([secret], sent, tampered)
    other_id = {**sent, "webhook-id": "msg_other"}
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(BODY, other_id)


def test_old_timestamp_is_refused() -> None:
    secret, old = signing.new_secret(), int(time.time()) - 600
    sent = signing.headers([secret], "msg_old", old, BODY)
    with pytest.raises(WebhookVerificationError, match="too old"):
        Webhook(secret).verify(BODY, sent)
    assert not signing.verify([secret], sent, BODY)
    assert signing.verify([secret], sent, BODY, now=old + 10)


def test_known_vector_from_the_specification() -> None:
    # the example in the Standard Webhooks specification / reference libraries
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    msg_id, timestamp = "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330
    body = b'{"test": 2432232314}'
    expected = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    assert signing.sign(secret, msg_id, timestamp, body) == expected
    at = datetime.fromtimestamp(timestamp, tz=UTC)
    assert Webhook(secret).sign(msg_id, at, body.decode()) == expected


@pytest.mark.parametrize("secret", ["", "whsec_", "nope_abc", "whsec_not base64!"])
def test_bad_secrets_are_refused_without_echoing_them(secret: str) -> None:
    with pytest.raises(ValueError) as caught:
        signing.sign(secret, "msg_1", 1, b"{}")
    assert "not base64!" not in str(caught.value)


def test_headers_need_secrets_and_a_clean_id() -> None:
    with pytest.raises(ValueError):
        signing.headers([], "msg_1", 1, b"{}")
    with pytest.raises(ValueError):
        signing.headers("whsec_abc", "msg_1", 1, b"{}")  # a str is not a list of secrets
    with pytest.raises(ValueError):
        signing.headers([signing.new_secret()], "msg 1", 1, b"{}")


def test_verify_ignores_unknown_versions_and_garbage() -> None:
    secret, now = signing.new_secret(), int(time.time())
    sent = signing.headers([secret], "msg_v", now, BODY)
    mixed = {**sent, "Webhook-Signature": "v2,abc v1,@@@ " + sent["webhook-signature"]}
    del mixed["webhook-signature"]
    assert signing.verify([secret], mixed, BODY)
    assert not signing.verify([secret], {**sent, "webhook-timestamp": "soon"}, BODY)
    assert not signing.verify([secret], {}, BODY)
