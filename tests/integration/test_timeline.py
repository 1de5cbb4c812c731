"""The profile timeline: every processed event counted in a profile, newest first, paged."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from conftest import ingest_and_process
from sqlalchemy import func, select, update

from identity.models import Profile, ProfileEvent
from identity.views import decode_cursor, encode_cursor, event_views, timeline
from pipeline import Database
from pipeline.events import get_event
from pipeline.schema import downgrade, upgrade

T0 = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)


def event(
    identifiers: dict[str, str], minute: int, channel: str = "web", **extra: Any
) -> dict[str, Any]:
    return {
        "message_id": f"tl-{uuid.uuid4().hex}",
        "channel": channel,
        "type": extra.pop("type", "page.viewed"),
        "occurred_at": T0 + timedelta(minutes=minute),
        "identifiers": identifiers,
        **extra,
    }


def store_and_process(db: Database, items: list[dict[str, Any]]) -> None:
    ingest_and_process(db, items, batch_size=7)


def profile_of(db: Database, message_id: str) -> str:
    with db.read() as session:
        record = get_event(session, "default", message_id)
        assert record is not None
        found = event_views(session, "default", [record])[0]["profile_id"]
    assert found
    return str(found)


def test_timeline_spans_channels_newest_first_and_pages_without_gaps(any_db: Database) -> None:
    user = f"u-{uuid.uuid4().hex[:8]}"
    email = f"{user}@example.com"
    # web login links user id and email; the shop and the mailbox know only the email
    items = [event({"user_id": user, "email": email}, 0, type="user.identified")]
    items += [
        event({"email": email}, 10 + i, channel="pos", type="order.completed") for i in range(5)
    ]
    items += [event({"email": email}, 20, channel="email", type="email.received")]
    # three events in the same instant: paging must neither skip nor repeat them
    items += [event({"user_id": user}, 30) for _ in range(3)]
    stranger = event({"user_id": f"other-{uuid.uuid4().hex[:8]}"}, 15)
    store_and_process(any_db, [*items, stranger])

    profile_id = profile_of(any_db, items[0]["message_id"])
    with any_db.read() as session:
        whole = timeline(session, "default", profile_id, limit=100)
        assert whole is not None
        seen = [e["message_id"] for e in whole["events"]]
        assert sorted(seen) == sorted(i["message_id"] for i in items)
        assert stranger["message_id"] not in seen
        times = [e["occurred_at"] for e in whole["events"]]
        assert times == sorted(times, reverse=True)
        assert {e["channel"] for e in whole["events"]} == {"web", "pos", "email"}
        assert whole["next_before"] is None

        paged: list[str] = []
        cursor = None
        for _ in range(10):
            page = timeline(session, "default", profile_id, limit=2, before=cursor)
            assert page is not None
            paged += [e["message_id"] for e in page["events"]]
            if page["next_before"] is None:
                break
            cursor = decode_cursor(page["next_before"])
        assert paged == seen

        before_orders = timeline(
            session,
            "default",
            profile_id,
            before=decode_cursor((T0 + timedelta(minutes=12)).isoformat()),
        )
        assert before_orders is not None
        assert [e["type"] for e in before_orders["events"]] == [
            "order.completed",
            "order.completed",
            "user.identified",
        ]
        assert timeline(session, "default", "prof_missing") is None


def test_merged_away_id_shows_the_survivors_timeline(any_db: Database) -> None:
    a, b = f"a-{uuid.uuid4().hex[:8]}", f"b-{uuid.uuid4().hex[:8]}"
    first, second = event({"user_id": a}, 1), event({"user_id": b}, 2)
    store_and_process(any_db, [first, second])
    survivor, loser = (
        profile_of(any_db, first["message_id"]),
        profile_of(any_db, second["message_id"]),
    )
    assert survivor != loser
    # what a merge does to the timeline (the identity issue's merge re-points these rows)
    with any_db.write() as session:
        session.execute(update(Profile).where(Profile.id == loser).values(merged_into=survivor))
        session.execute(
            update(ProfileEvent).where(ProfileEvent.profile_id == loser).values(profile_id=survivor)
        )
    with any_db.read() as session:
        view = timeline(session, "default", loser)
        assert view is not None
        assert view["profile_id"] == survivor and view["requested_id"] == loser
        assert {e["message_id"] for e in view["events"]} == {
            first["message_id"],
            second["message_id"],
        }
    assert profile_of(any_db, second["message_id"]) == survivor


def test_cursor_round_trips_and_bad_ones_say_why() -> None:
    at = datetime(2026, 11, 2, 10, 15, 0, 123456, tzinfo=UTC)
    token = encode_cursor(at, 42)
    assert token.isascii() and "+" not in token and ":" not in token
    assert decode_cursor(token) == (at, 42)
    assert decode_cursor("2026-11-02T11:15:00+01:00") == (
        datetime(2026, 11, 2, 10, 15, tzinfo=UTC),
        0,
    )
    with pytest.raises(ValueError, match="offset"):
        decode_cursor("2026-11-02T10:15:00")
    with pytest.raises(ValueError, match="next_before"):
        decode_cursor("yesterday")


@pytest.mark.parametrize("url_fixture", ["sqlite_url", "postgres_url"])
def test_0005_backfills_the_profile_of_already_processed_events(
    url_fixture: str, request: pytest.FixtureRequest
) -> None:
    db = Database.connect(request.getfixturevalue(url_fixture))
    try:
        upgrade(db)
        items = [event({"user_id": "bf-1", "email": "bf@example.com"}, 0)]
        items += [event({"email": "bf@example.com"}, 1), event({"anonymous_id": "anon-bf"}, 2)]
        store_and_process(db, items)
        with db.read() as session:
            before = dict(
                session.execute(select(ProfileEvent.event_id, ProfileEvent.profile_id)).all()
            )
        assert len(before) == 3
        downgrade(db, "0004")  # the schema before the timeline table, data kept
        upgrade(db)
        with db.read() as session:
            after = dict(
                session.execute(select(ProfileEvent.event_id, ProfileEvent.profile_id)).all()
            )
            assert session.scalar(select(func.count()).select_from(ProfileEvent)) == 3
        assert after == before
    finally:
        db.dispose()
