"""Segment messages -> Touchpoints, so existing Segment client libraries send to us unchanged.

Why the mapping is a pure function: the same code serves ``/v1/track`` and every element
of ``/v1/batch``, and is unit-tested without a server. Field names (``userId``,
``anonymousId``, ``messageId``, ``timestamp``, ``sentAt``, ``originalTimestamp``…) follow
Segment's HTTP Tracking API spec.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from pipeline.identifiers import lenient_identifiers

SEGMENT_TYPES = ("identify", "track", "page", "screen", "group", "alias")
_FIXED_TYPES = {
    "identify": "profile.identified",
    "page": "page.viewed",
    "screen": "screen.viewed",
    "group": "group.joined",
    "alias": "identity.aliased",
}
_WORD = re.compile(r"[a-z0-9]+")
#: message fields kept in ``context.segment``, in this order
_SEGMENT_FIELDS = ("event", "name", "category", "groupId", "previousId", "integrations")


class SegmentMessageError(ValueError):
    """A Segment message that cannot become a touchpoint; ``field`` uses Segment's names."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


@lru_cache(maxsize=4096)  # a shop has a few dozen event names, sent over and over
def event_type(name: str) -> str:
    """``"Order Completed"`` -> ``order.completed``; one word -> ``custom.<word>``."""
    words = _WORD.findall(name.casefold())
    if not words:
        raise SegmentMessageError("event", "must contain letters or digits")
    if len(words) == 1:
        return f"custom.{words[0]}"[:64]
    obj = "_".join(words[:-1])
    if obj[0].isdigit():
        obj = "e_" + obj
    return f"{obj}.{words[-1]}"[:64]


def _time(message: dict[str, Any], field: str) -> datetime | None:
    raw = message.get(field)
    if raw is None:
        return None
    if not isinstance(raw, str):
        raise SegmentMessageError(field, "must be an ISO-8601 string")
    z = raw.find("Z")
    if z == -1 or z == len(raw) - 1:
        # Python reads a final "Z" itself, to the same aware time as "+00:00"; what it
        # refuses takes the general way below (so do errors, e.g. "2026-01-01Z").
        try:
            value = datetime.fromisoformat(raw)
        except ValueError:
            value = _replaced_z(raw, field)
    else:
        value = _replaced_z(raw, field)
    if value.tzinfo is UTC:
        return value
    if value.tzinfo is None:
        raise SegmentMessageError(field, "needs a time zone offset (or Z)")
    return value.astimezone(UTC)


def _replaced_z(raw: str, field: str) -> datetime:
    try:
        return datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise SegmentMessageError(field, f"not an ISO-8601 timestamp: {raw!r}") from None


def occurred_at(message: dict[str, Any], received_at: datetime) -> datetime:
    """Segment's clock-skew correction: receivedAt - (sentAt - originalTimestamp)."""
    sent = _time(message, "sentAt")
    original = _time(message, "originalTimestamp")
    timestamp = _time(message, "timestamp")
    if sent is not None and (original or timestamp) is not None:
        base = original or timestamp
        assert base is not None
        return received_at - (sent - base)
    return timestamp or original or received_at


def _dict(message: dict[str, Any], field: str) -> dict[str, Any]:
    value = message.get(field)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise SegmentMessageError(field, "must be an object")
    return value


def _id(message: dict[str, Any], field: str) -> str | None:
    value = message.get(field)
    if type(value) is str:  # the common case first
        return value or None
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise SegmentMessageError(field, "must be a string")
    return str(value)


def shape_problem(message: Any) -> tuple[str, str] | None:
    """What :func:`to_touchpoint` would refuse for the message's shape, or ``None``.

    Why separate: in spool mode (``ECRM_INGEST_MODE=spool``) the API answers after this
    check alone, in a microsecond or so a message, and the worker maps the message later
    (timestamps, ids and traits are read then). What this accepts, ``to_touchpoint``
    accepts too, except for an unreadable timestamp or an id that is too long.
    """
    if type(message) is not dict:
        return "body", "each message must be a JSON object"
    if _plainly_valid(message):
        return None
    get = message.get
    kind = get("type")
    if type(kind) is not str or kind not in _TYPE_SET:
        return "type", f"must be one of {', '.join(SEGMENT_TYPES)}"
    # the same checks in the same order as to_touchpoint, so the same field is named
    try:
        user_id, anonymous_id = _id(message, "userId"), _id(message, "anonymousId")
        if user_id is None and anonymous_id is None:
            return "userId", "userId or anonymousId is required"
        for field in _OBJECT_FIELDS:
            value = get(field) if field != "traits" or kind in _WITH_TRAITS else None
            if value is not None and not isinstance(value, dict):
                return field, "must be an object"
        if kind == "alias" and _id(message, "previousId") is None:
            return "previousId", "alias needs the previous id"
        if kind == "track" and not _named(get("event")):
            return "event", "track needs an event name (with letters or digits)"
        _id(message, "messageId")
    except SegmentMessageError as exc:
        return exc.field, exc.reason
    for field in _TIME_FIELDS:
        value = get(field)
        if value is not None and not isinstance(value, str):
            return field, "must be an ISO-8601 string"
    return None


_TYPE_SET = frozenset(SEGMENT_TYPES)
#: the types whose ``traits`` are read (others take ``context.traits``)
_WITH_TRAITS = frozenset({"identify", "group"})
_OBJECT_FIELDS = ("context", "traits", "properties")
_TIME_FIELDS = ("sentAt", "originalTimestamp", "timestamp")  # the order occurred_at reads


#: track event names already mapped once (a shop sends a few dozen, over and over)
_KNOWN_NAMES: set[str] = set()
_NO_ALIAS = frozenset(SEGMENT_TYPES) - {"alias"}
_NOTHING = (None,)


def _plainly_valid(message: dict[str, Any]) -> bool:
    """The common case, in few operations: a known type other than alias, string ids (one
    of userId and anonymousId non-empty), a known event name, objects and strings where
    they belong. ``False`` only means "look closer" (:func:`shape_problem` does)."""
    get = message.get
    kind = get("type")
    if type(kind) is not str or kind not in _NO_ALIAS:  # a list or dict is not hashable
        return False
    user, anonymous, message_id = get("userId"), get("anonymousId"), get("messageId")
    if not (
        (user is None or type(user) is str)
        and (anonymous is None or type(anonymous) is str)
        and (user or anonymous)
        and (message_id is None or type(message_id) is str)
    ):
        return False
    if kind == "track":
        name = get("event")
        if not isinstance(name, str):
            return False
        if name not in _KNOWN_NAMES:
            if not _named(name):
                return False
            if len(_KNOWN_NAMES) < 4096:
                _KNOWN_NAMES.add(name)
    context, properties = get("context"), get("properties")
    traits = get("traits") if kind in _WITH_TRAITS else None  # elsewhere not read
    if not (
        (context is None or type(context) is dict)
        and (traits is None or type(traits) is dict)
        and (properties is None or type(properties) is dict)
    ):
        return False
    timestamp, sent, original = get("timestamp"), get("sentAt"), get("originalTimestamp")
    return (
        (timestamp is None or type(timestamp) is str)
        and (sent is None or type(sent) is str)
        and (original is None or type(original) is str)
    )


def _named(name: Any) -> bool:
    """A track's ``event`` that :func:`event_type` can map (cached: names repeat)."""
    if type(name) is not str or not name.strip():
        return False
    try:
        event_type(name)
    except SegmentMessageError:
        return False
    return True


def to_touchpoint(
    message: Any,
    *,
    received_at: datetime,
    default_region: str,
    message_type: str | None = None,
) -> dict[str, Any]:
    """Map one Segment message to the Touchpoint fields (validated later by ingest)."""
    if not isinstance(message, dict):
        raise SegmentMessageError("body", "each message must be a JSON object")
    kind = message_type or message.get("type")
    if kind not in SEGMENT_TYPES:
        raise SegmentMessageError("type", f"must be one of {', '.join(SEGMENT_TYPES)}")
    user_id, anonymous_id = _id(message, "userId"), _id(message, "anonymousId")
    if user_id is None and anonymous_id is None:
        raise SegmentMessageError("userId", "userId or anonymousId is required")
    context = _dict(message, "context")
    traits = _dict(message, "traits") if kind in ("identify", "group") else {}
    if not traits and isinstance(context.get("traits"), dict):
        traits = context["traits"]
    properties = _dict(message, "properties")
    identifiers: dict[str, Any] = {}
    if user_id is not None:
        identifiers["user_id"] = user_id
    if anonymous_id is not None:
        identifiers["anonymous_id"] = anonymous_id
    if kind == "alias":
        previous_id = _id(message, "previousId")
        if previous_id is None:
            raise SegmentMessageError("previousId", "alias needs the previous id")
        # Server-side libraries send alias(previousId=<anonymous id>, userId=<new id>);
        # browsers send the anonymousId too. Either way the two ids reach identity on one
        # event, which links them. A previousId that was an earlier userId stays in
        # context.segment for identity's explicit-link rules.
        identifiers.setdefault("anonymous_id", previous_id)
    email, phone = traits.get("email"), traits.get("phone")
    if email is not None or phone is not None:
        identifiers.update(lenient_identifiers({"email": email, "phone": phone}, default_region))
    if kind == "track":
        name = message.get("event")
        if not isinstance(name, str) or not name.strip():
            raise SegmentMessageError("event", "track needs an event name")
        type_ = event_type(name)
    else:
        type_ = _FIXED_TYPES[kind]
    segment = {"type": kind}
    for field in _SEGMENT_FIELDS:
        value = message.get(field)
        if value is not None:
            segment[field] = value
    return {
        "message_id": _id(message, "messageId") or f"gen-{uuid.uuid4()}",
        "channel": "web",
        "type": type_,
        "occurred_at": occurred_at(message, received_at),
        "received_at": received_at,
        "source": "segment",
        "identifiers": identifiers,
        "traits": traits,
        "properties": properties,
        "context": {**context, "segment": segment},
    }
