"""Standard Webhooks signatures: what a receiver checks to trust a delivery.

Why the standard and not our own scheme: a consumer can verify our deliveries with any
Standard Webhooks library (``standardwebhooks``, Svix) without reading our docs. Each
delivery carries three headers:

- ``webhook-id``: the message id, the same on every retry, so receivers can deduplicate;
- ``webhook-timestamp``: Unix seconds when this attempt was signed (receivers refuse old
  ones, which stops replays);
- ``webhook-signature``: ``v1,`` + base64 HMAC-SHA256 of ``{id}.{timestamp}.{body}`` keyed
  with the secret's decoded bytes; during a secret rotation it holds one signature per
  secret, space-separated, so receivers holding either secret accept the delivery.

Secrets are ``whsec_`` + base64 of 32 random bytes. Nothing here logs a secret or a body.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets as _random
import time
from collections.abc import Mapping, Sequence

import uuid6

SECRET_PREFIX = "whsec_"  # noqa: S105  (a prefix, not a secret)
SIGNATURE_VERSION = "v1"
ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"
#: how far a timestamp may be from now for :func:`verify` (the standard's suggestion)
DEFAULT_TOLERANCE_SECONDS = 300
_SECRET_BYTES = 32


def new_secret() -> str:
    """A fresh signing secret: ``whsec_`` + base64 of 32 bytes from :mod:`secrets`."""
    return SECRET_PREFIX + base64.b64encode(_random.token_bytes(_SECRET_BYTES)).decode("ascii")


def new_message_id() -> str:
    """``msg_`` + a UUIDv7 in hex: time-ordered, so ids sort like the messages were made."""
    return "msg_" + uuid6.uuid7().hex


def _key(secret: str) -> bytes:
    """The HMAC key of a ``whsec_`` secret; :class:`ValueError` (without the secret) if bad."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError(f"a webhook secret must start with {SECRET_PREFIX!r}")
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("a webhook secret must be whsec_ followed by base64") from None
    if not key:
        raise ValueError("a webhook secret must not be empty")
    return key


def _digest(key: bytes, msg_id: str, timestamp: int, body: bytes) -> bytes:
    return hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """``v1,<base64>``: the signature of one delivery with one secret."""
    digest = _digest(_key(secret), msg_id, timestamp, body)
    return f"{SIGNATURE_VERSION}," + base64.b64encode(digest).decode("ascii")


def headers(secrets: Sequence[str], msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three Standard Webhooks headers; several secrets (rotation) sign side by side.

    ``timestamp`` is the signing time of this attempt (Unix seconds), not the event's:
    receivers compare it with their clock, so a retry is signed afresh.
    """
    if isinstance(secrets, str) or not secrets:
        raise ValueError("headers() needs a non-empty sequence of secrets")
    if not msg_id or " " in msg_id or "," in msg_id:
        raise ValueError("a webhook message id must be non-empty, without spaces or commas")
    return {
        ID_HEADER: msg_id,
        TIMESTAMP_HEADER: str(int(timestamp)),
        SIGNATURE_HEADER: " ".join(sign(s, msg_id, timestamp, body) for s in secrets),
    }


def verify(
    secrets: Sequence[str],
    received: Mapping[str, str],
    body: bytes,
    *,
    tolerance_seconds: int = DEFAULT_TOLERANCE_SECONDS,
    now: int | None = None,
) -> bool:
    """True if ``received`` headers carry a valid, fresh signature by any of ``secrets``.

    For our own tests and tools (receivers use their own library). Header names are
    case-insensitive; signatures are compared in constant time; a timestamp more than
    ``tolerance_seconds`` from ``now`` fails, as the standard asks of receivers.
    """
    lowered = {name.lower(): value for name, value in received.items()}
    msg_id = lowered.get(ID_HEADER, "")
    stamp = lowered.get(TIMESTAMP_HEADER, "")
    if not msg_id or not stamp.isdigit():
        return False
    timestamp = int(stamp)
    current = int(time.time()) if now is None else now
    if abs(current - timestamp) > tolerance_seconds:
        return False
    offered: list[bytes] = []
    for part in lowered.get(SIGNATURE_HEADER, "").split():
        version, _, value = part.partition(",")
        if version != SIGNATURE_VERSION:
            continue
        try:
            offered.append(base64.b64decode(value, validate=True))
        except (binascii.Error, ValueError):
            continue
    found = False
    for secret in secrets:
        expected = _digest(_key(secret), msg_id, timestamp, body)
        for candidate in offered:
            # no early exit: the time taken does not depend on which signature matched
            found |= hmac.compare_digest(expected, candidate)
    return found
