"""The envelope's fast path for plain dicts agrees with the model's validation."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import pydantic
import pytest

from pipeline.envelope import MAX_JSON_FIELD_KEYS, Channel, Touchpoint, touchpoint_values

T0 = datetime(2026, 11, 1, 9, 0, 0, 123456, tzinfo=UTC)


def fields(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "message_id": "m-1",
        "channel": "web",
        "type": "order.completed",
        "occurred_at": T0,
        "received_at": T0 + timedelta(seconds=1),
        "source": "segment",
        "identifiers": {"user_id": "u1"},
        "traits": {"name": "Ann"},
        "properties": {"total": 1.5, "items": [{"sku": "A"}]},
        "context": {"ip": "203.0.113.7", "segment": {"type": "track"}},
    }
    base.update(changes)
    return {k: v for k, v in base.items() if v is not _DROP}


_DROP = object()


def model_values(data: dict[str, Any]) -> dict[str, Any] | str:
    """What the model makes of ``data`` (channel as its value), or its first error."""
    try:
        touchpoint = Touchpoint.model_validate(data)
    except pydantic.ValidationError as exc:
        return str(exc.errors()[0]["loc"])
    values = dict(touchpoint.__dict__)
    values["channel"] = touchpoint.channel.value
    return values


def agrees(data: dict[str, Any]) -> bool:
    """The fast path either declines or returns exactly the model's values; True if taken."""
    fast = touchpoint_values(data)
    if fast is None:
        return False
    expected = model_values(data)
    assert isinstance(expected, dict), expected
    if "received_at" not in data:  # defaults to now: moments apart
        assert abs(fast["received_at"] - expected["received_at"]) < timedelta(seconds=5)
        expected["received_at"] = fast["received_at"]
    assert fast == expected
    assert isinstance(fast["channel"], str) and not isinstance(fast["channel"], Channel)
    for name in ("occurred_at", "received_at"):
        assert fast[name].tzinfo is UTC
        assert repr(fast[name]) == repr(expected[name])
    return True


def test_the_common_case_takes_the_fast_path() -> None:
    assert agrees(fields())
    assert agrees(fields(channel=Channel.POS, context=_DROP, traits=_DROP, properties=_DROP))
    assert agrees(fields(received_at=_DROP, source=_DROP))
    assert agrees(fields(occurred_at=datetime(2026, 3, 29, 1, 30, tzinfo=ZoneInfo("Europe/Oslo"))))
    assert agrees(fields(occurred_at=T0.astimezone(timezone(timedelta(hours=-3)))))
    assert agrees(fields(identifiers={"user_id": 12, "email": " A@B.example "}))
    assert agrees(fields(traits={"first name": " Ann ", "": 1}))  # inner space, empty key


@pytest.mark.parametrize(
    "changes",
    [
        {"message_id": " m-1"},
        {"message_id": "m-1\n"},
        {"message_id": ""},
        {"message_id": "m" * 256},
        {"message_id": "mé"},
        {"message_id": 7},
        {"message_id": _DROP},
        {"channel": "fax"},
        {"channel": " web"},
        {"type": "Order Completed"},
        {"type": "order.completed\n"},
        {"type": " order.completed"},
        {"type": "a." + "b" * 63},
        {"occurred_at": datetime(2026, 1, 1)},  # naive
        {"occurred_at": "2026-01-01T00:00:00Z"},
        {"received_at": None},
        {"source": ""},
        {"source": " pos "},
        {"identifiers": {}},
        {"identifiers": {" user_id": "u1"}},
        {"identifiers": [("user_id", "u1")]},
        {"traits": None},
        {"traits": {"name ": "Ann"}},
        {"traits": {"\tname": "Ann"}},
        {"traits": {"prénom": "Ann"}},
        {"traits": {1: "Ann"}},
        {"properties": {str(n): n for n in range(MAX_JSON_FIELD_KEYS + 1)}},
        {"context": {"ip\x0b": 1}},
        {"extra": 1},
    ],
)
def test_anything_unusual_is_left_to_the_model(changes: dict[str, Any]) -> None:
    data = fields(**changes)
    assert not agrees(data)


def test_random_keys_and_texts_agree() -> None:
    rng = random.Random(20261201)
    alphabet = ["a", "Z", "_", "0", " ", "\t", "\n", "\x0b", "\x0c", "\r", "\x1c", "\x85", "é"]

    def text() -> str:
        return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 4)))

    taken = 0
    for _ in range(3000):
        data = fields(
            message_id=text() or "m",
            source=text() or "s",
            traits={text(): 1 for _ in range(rng.randint(0, 3))},
            properties={text(): text() for _ in range(rng.randint(0, 3))},
        )
        taken += agrees(data)
    assert taken > 50  # the fast path was exercised, not only declined


def _reference_time(raw: str) -> datetime | str:
    """The Segment connector's timestamp reading before its fast path, as the reference."""
    try:
        value = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        return "not an ISO-8601 timestamp"
    if value.tzinfo is None:
        return "needs a time zone offset"
    return value.astimezone(UTC)


@pytest.mark.parametrize(
    "raw",
    [
        "2026-01-01T10:00:00.000Z",
        "2026-01-01T10:00:00Z",
        "2026-01-01T10:00:00.123456Z",
        "2026-01-01T10:00:00.123+02:00",
        "2026-01-01T10:00:00-05:30",
        "2026-01-01T10Z",
        "20260101T100000Z",
        "2026-01-01T10:00:00",
        "2026-01-01",
        "2026-01-01Z",
        "2026-01-01Z10:00:00",
        "2026-01-01Z10:00:00Z",
        "2026-01-01T10:00:00.000z",
        "2026-01-01T10:00:00ZZ",
        "2026-01-01T10:00:00+00:00Z",
        "yesterday",
        "",
    ],
)
def test_segment_timestamps_read_as_before(raw: str) -> None:
    from connectors.web.segment import SegmentMessageError, _time

    got: datetime | str | None
    try:
        got = _time({"timestamp": raw}, "timestamp")
    except SegmentMessageError as exc:
        got = exc.reason
    expected = _reference_time(raw)
    if isinstance(expected, str):
        assert isinstance(got, str) and got.startswith(expected)
    else:
        assert got == expected and repr(got) == repr(expected)


def test_sqlite_time_is_sqlalchemys_text() -> None:
    from pipeline.db import sqlite_time

    rng = random.Random(5)
    samples = [datetime.min.replace(tzinfo=UTC), datetime.max.replace(tzinfo=UTC)]
    samples += [
        datetime(1, 1, 1, tzinfo=UTC) + timedelta(microseconds=rng.randrange(3 * 10**17))
        for _ in range(2000)
    ]
    samples += [T0.replace(microsecond=0), T0.astimezone(ZoneInfo("Asia/Kolkata"))]
    for value in samples:
        assert sqlite_time(value) == value.astimezone(UTC).isoformat(" ", "microseconds")[:26]
    with pytest.raises(ValueError, match="naive"):
        sqlite_time(datetime(2026, 1, 1))
