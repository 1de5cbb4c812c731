"""The one envelope every connector produces: :class:`Touchpoint`.

Why one envelope: nothing downstream of ingest knows which connector made an event, so a
new touchpoint only has to produce this. Validation lives here so that every connector
refuses the same things with the same field names.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from enum import StrEnum
from functools import lru_cache
from typing import Any

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
)

MAX_JSON_FIELD_KEYS = 500
_TYPE_RE = r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$"
_TYPE_PATTERN = re.compile(_TYPE_RE)


class Channel(StrEnum):
    """The touchpoints a business meets its customers at."""

    EMAIL = "email"
    WEB = "web"
    POS = "pos"
    CALL = "call"
    SMS = "sms"


def utcnow() -> datetime:
    """Aware UTC now (the hub never handles naive times)."""
    return datetime.now(UTC)


class Touchpoint(BaseModel):
    """One event from one touchpoint, validated; identifiers are normalized by ingest.

    ``type`` is past tense and dotted (``order.completed``, ``page.viewed``); times are
    aware and converted to UTC; ``message_id`` is the dedupe key within a workspace.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)

    message_id: str = Field(min_length=1, max_length=255)
    channel: Channel
    type: str = Field(min_length=3, max_length=64, pattern=_TYPE_RE)
    occurred_at: AwareDatetime
    received_at: AwareDatetime = Field(default_factory=utcnow)
    source: str = Field(default="api", min_length=1, max_length=64)
    identifiers: dict[str, Any] = Field(min_length=1)
    traits: dict[str, Any] = Field(default_factory=dict)
    properties: dict[str, Any] = Field(default_factory=dict)
    context: dict[str, Any] = Field(default_factory=dict)

    @field_validator("occurred_at", "received_at")
    @classmethod
    def _to_utc(cls, value: datetime) -> datetime:
        return value.astimezone(UTC)

    @field_validator("traits", "properties", "context")
    @classmethod
    def _bounded(cls, value: dict[str, Any]) -> dict[str, Any]:
        if len(value) > MAX_JSON_FIELD_KEYS:
            raise ValueError(f"at most {MAX_JSON_FIELD_KEYS} keys")
        return value


#: every field a touchpoint has (``extra="forbid"`` refuses any other key)
_FIELDS = frozenset(Touchpoint.model_fields)
_CHANNELS = {member.value: member.value for member in Channel}
#: ASCII white space: what ``str_strip_whitespace`` trims from ASCII text
_SPACE = " \t\n\r\v\f"

#: stands for a missing object field (a fresh ``{}`` is returned in its place)
_EMPTY: dict[str, Any] = {}


def _plain_text(value: object, shortest: int, longest: int) -> bool:
    """ASCII text that stripping leaves alone, within the length bounds."""
    return (
        type(value) is str
        and shortest <= len(value) <= longest
        and value.isascii()
        and value[0] not in _SPACE
        and value[-1] not in _SPACE
    )


def _aware_utc(value: object) -> datetime | None:
    if type(value) is not datetime:
        return None
    if value.tzinfo is UTC:
        return value
    return None if value.utcoffset() is None else value.astimezone(UTC)


def _plain_keys(keys: list[Any]) -> bool:
    """Every key is ASCII text that stripping leaves alone."""
    try:
        text = " ".join(keys)
    except TypeError:  # a key that is not a string
        return False
    if not text.isascii():
        return False
    # printable ASCII has no white space but " ", so this is the common case: no key
    # holds any white space at all
    if text.isprintable() and text.count(" ") == len(keys) - 1:
        return True
    return all(key == key.strip(_SPACE) for key in keys)


@lru_cache(maxsize=4096)  # a hub sees a few dozen event types, over and over
def _good_type(value: str) -> bool:
    return 3 <= len(value) <= 64 and _TYPE_PATTERN.fullmatch(value) is not None


def touchpoint_values(data: Mapping[str, Any]) -> dict[str, Any] | None:
    """The fields :meth:`Touchpoint.model_validate` makes of ``data``, without pydantic.

    Why: connectors hand ingest plain dicts by the hundred per request, and the model's
    validation (with its Python validators and copies) was the largest part of ingest's
    CPU after the insert itself. This accepts only the common, unambiguous case, and for
    it returns exactly what the model would hold (``channel`` as its value, times in UTC,
    the same dicts; ``data`` itself when it is that already). For anything else (another
    type, white space to strip, non-ASCII text or keys, a missing, unknown or out-of-range
    field) it returns ``None`` and the caller validates with the model, which accepts or
    explains. ``tests/unit/test_envelope.py`` checks that both agree.
    """
    if type(data) is not dict or not _FIELDS.issuperset(data):
        return None
    message_id, type_, channel = data.get("message_id"), data.get("type"), data.get("channel")
    if (
        not _plain_text(message_id, 1, 255)
        or type(type_) is not str
        or not _good_type(type_)
        or type(channel) not in (str, Channel)
        or channel not in _CHANNELS
    ):
        return None
    occurred = _aware_utc(data.get("occurred_at"))
    received = _aware_utc(data["received_at"]) if "received_at" in data else utcnow()
    source = data.get("source", "api")
    if occurred is None or received is None or not _plain_text(source, 1, 64):
        return None
    identifiers = data.get("identifiers")
    traits = data.get("traits", _EMPTY)
    properties = data.get("properties", _EMPTY)
    context = data.get("context", _EMPTY)
    if (
        type(identifiers) is not dict
        or not identifiers
        or type(traits) is not dict
        or type(properties) is not dict
        or type(context) is not dict
        or len(traits) > MAX_JSON_FIELD_KEYS
        or len(properties) > MAX_JSON_FIELD_KEYS
        or len(context) > MAX_JSON_FIELD_KEYS
        or not _plain_keys([*identifiers, *traits, *properties, *context])
    ):
        return None
    if (
        len(data) == len(_FIELDS)
        and type(channel) is str
        and occurred is data["occurred_at"]
        and received is data["received_at"]
    ):
        return data  # every field given, in the model's form already (the Segment mapping)
    return {
        "message_id": message_id,
        "channel": _CHANNELS[channel],
        "type": type_,
        "occurred_at": occurred,
        "received_at": received,
        "source": source,
        "identifiers": identifiers,
        "traits": traits if traits is not _EMPTY else {},
        "properties": properties if properties is not _EMPTY else {},
        "context": context if context is not _EMPTY else {},
    }
