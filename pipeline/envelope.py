"""The one envelope every connector produces: :class:`Touchpoint`.

Why one envelope: nothing downstream of ingest knows which connector made an event, so a
new touchpoint only has to produce this. Validation lives here so that every connector
refuses the same things with the same field names.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from enum import StrEnum
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
