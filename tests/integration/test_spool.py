"""Spool mode's storage and expansion (``pipeline.spool``), on SQLite and PostgreSQL.

Requests stored raw under one batch become that batch's events when a worker takes it:
mapped by the same code as the API's validate mode, refused messages kept with their
index, duplicates of logged events not counted twice, the spooled rows gone; a second
expansion (a redelivered message) does nothing.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
import sqlalchemy as sa
from conftest import ingest_and_process

from connectors.web.batch import SEGMENT_BATCH, check_batch, spooled_batch_mapper
from pipeline import Database
from pipeline.models import Batch
from pipeline.outbox import MAX_BATCH_ATTEMPTS, quarantine_exhausted, relay
from pipeline.spool import SpoolItem, backlog, expand, rejections, spool, spooled
from workers.processing import process_batches

RECEIVED = datetime(2026, 12, 4, 10, 0, tzinfo=UTC)


def item(messages: list[Any], received: datetime = RECEIVED) -> SpoolItem:
    body = {"batch": messages}
    raw = orjson.dumps(body)
    count, refused = check_batch(body, max_event_bytes=32 * 1024, body_bytes=len(raw))
    return SpoolItem(SEGMENT_BATCH, raw, received, [r["index"] for r in refused], count)


def track(user: str, message_id: str) -> dict[str, Any]:
    return {"type": "track", "event": "Order Completed", "userId": user, "messageId": message_id}


def test_spooled_requests_become_the_batch_events_once(any_db: Database) -> None:
    tag = uuid.uuid4().hex[:8]
    # an event already in the log (validate mode), sent again in a spooled request
    ingest_and_process(
        any_db,
        [
            {
                "message_id": f"{tag}-old",
                "channel": "web",
                "type": "page.viewed",
                "occurred_at": RECEIVED,
                "source": "test",
                "identifiers": {"user_id": f"{tag}-u1"},
            }
        ],
    )
    first = item(
        [
            {
                **track(f"{tag}-u1", f"{tag}-1"),
                "properties": {"total": 12},
                "sentAt": "2026-12-04T10:00:05Z",
                "timestamp": "2026-12-04T10:00:00Z",
            },
            {"type": "track", "userId": f"{tag}-u1"},  # no event name: refused at the door
            {"type": "page", "userId": f"{tag}-u1", "messageId": f"{tag}-old"},  # duplicate
            {"type": "page", "userId": f"{tag}-u2", "messageId": f"{tag}-2", "timestamp": "soon"},
        ]
    )
    second = item([{"type": "identify", "userId": f"{tag}-u2", "messageId": f"{tag}-3"}])
    assert (first.skip, first.count, second.count) == ([1], 3, 1)
    with any_db.write() as session:
        batch_id = spool(session, "default", [first, second])
    with any_db.read() as session:
        assert spooled(session, [batch_id, batch_id + 1000]) == [batch_id]
        assert backlog(session, "default") == {
            "requests": 2,
            "messages": 4,
            "oldest_received_at": RECEIVED.isoformat(),
        }

    published: list[list[int]] = []
    relay(any_db, published.append, batch_size=500, lease_seconds=60)
    assert published == [[batch_id]]  # the spooled batch is an outbox row like any other
    assert process_batches(any_db, published[0]) == 2  # expanded, then processed

    with any_db.read() as session:
        rows = session.execute(
            sa.text(
                "SELECT message_id, type, occurred_at, received_at FROM events"
                " WHERE batch_id = :b ORDER BY id"
            ),
            {"b": batch_id},
        ).all()
        batch = session.get(Batch, batch_id)
        refused = rejections(session, "default")
        assert spooled(session, [batch_id]) == []
        assert backlog(session, "default")["requests"] == 0
    assert [(r[0], r[1]) for r in rows] == [
        (f"{tag}-1", "order.completed"),
        (f"{tag}-3", "profile.identified"),
    ]
    # Segment's clock-skew correction uses the spooled request's receipt time
    occurred = rows[0][2]
    occurred = occurred if isinstance(occurred, datetime) else datetime.fromisoformat(occurred)
    occurred = occurred if occurred.tzinfo else occurred.replace(tzinfo=UTC)  # SQLite: UTC text
    assert occurred == datetime(2026, 12, 4, 9, 59, 55, tzinfo=UTC)
    assert batch is not None and (batch.status, batch.event_count) == ("done", 2)
    assert [(r["index"], r["message_id"], r["field"]) for r in refused] == [
        (3, f"{tag}-2", "timestamp")
    ]
    assert "ISO-8601" in refused[0]["reason"]

    # a redelivered message: nothing left to expand, nothing processed twice
    with any_db.write() as session:
        again = expand(session, [batch_id], {SEGMENT_BATCH: spooled_batch_mapper("US")}, "US")
    assert again.requests == 0
    assert process_batches(any_db, [batch_id]) == 0


def test_a_spooled_batch_of_duplicates_is_done_with_no_events(any_db: Database) -> None:
    tag = uuid.uuid4().hex[:8]
    with any_db.write() as session:
        spool(session, "default", [item([track("u", f"{tag}-a")])])
    published: list[list[int]] = []
    relay(any_db, published.append, batch_size=500, lease_seconds=60)
    assert process_batches(any_db, published[0]) == 1
    with any_db.write() as session:
        batch_id = spool(session, "default", [item([track("u", f"{tag}-a")])])
    assert process_batches(any_db, [batch_id]) == 0
    with any_db.read() as session:
        batch = session.get(Batch, batch_id)
        events = session.execute(
            sa.text("SELECT count(*) FROM events WHERE message_id = :m"), {"m": f"{tag}-a"}
        ).scalar_one()
    assert batch is not None and (batch.status, batch.event_count) == ("done", 0)
    assert events == 1


def test_a_request_that_cannot_be_expanded_is_kept_and_retried_not_quarantined(
    any_db: Database,
) -> None:
    broken = SpoolItem("no.such.kind", b'{"batch": [{}]}', RECEIVED, [], 1)
    with any_db.write() as session:
        batch_id = spool(session, "default", [broken])
    with pytest.raises(KeyError):
        process_batches(any_db, [batch_id])
    with any_db.write() as session:
        session.execute(
            sa.update(Batch).where(Batch.id == batch_id).values(attempts=MAX_BATCH_ATTEMPTS)
        )
    with any_db.write() as session:
        quarantine_exhausted(session)
    with any_db.read() as session:
        batch = session.get(Batch, batch_id)
        assert batch is not None and batch.status == "queued"
        assert batch.last_error is not None and "no.such.kind" in batch.last_error
        assert spooled(session, [batch_id]) == [batch_id]  # the request is kept
