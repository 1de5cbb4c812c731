"""Ingest's own SQLite insert writes what SQLAlchemy's column types would, in any number."""

from __future__ import annotations

import sqlite3
import uuid
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from pipeline import Database, ingest
from pipeline.models import EVENTS, Batch, Event
from pipeline.schema import upgrade

T0 = datetime(2026, 11, 1, 9, 0, 0, 250000, tzinfo=UTC)
COLUMNS = (
    "workspace_id, message_id, channel, type, occurred_at, received_at, source, identifiers,"
    " traits, properties, context, batch_id"
)


def item(n: int, run: str) -> dict[str, Any]:
    zone = timezone(timedelta(hours=n % 5 - 2))
    return {
        "message_id": f"{run}-{n}",
        "channel": "web" if n % 2 else "pos",
        "type": "order.completed",
        "occurred_at": (T0 + timedelta(seconds=n, microseconds=n)).astimezone(zone),
        "received_at": T0,
        "source": "test",
        "identifiers": {"user_id": f"u{n % 7}", "email": f" U{n % 3}@Example.com "},
        "traits": {"name": "Zoë", "n": n} if n % 3 else {},
        "properties": {"total": n / 4, "big": 2**63 - 1, "items": [{"sku": "A\u0000"}]},
        "context": {} if n % 4 else {"ip": "203.0.113.7", "nested": {"a": [1, None, True]}},
    }


def stored(path: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(path) as conn:
        return conn.execute(f"SELECT {COLUMNS} FROM events ORDER BY message_id").fetchall()


def test_rows_match_sqlalchemy_and_duplicates_are_found(tmp_path: Path) -> None:
    run = uuid.uuid4().hex[:8]
    ours = Database.connect(f"sqlite:///{tmp_path / 'ours.sqlite'}")
    reference = Database.connect(f"sqlite:///{tmp_path / 'reference.sqlite'}")
    upgrade(ours)
    upgrade(reference)
    items = [item(n, run) for n in range(1100)]  # statements of 512, 512, 64, 8 and 4 rows
    with ours.write() as session:
        early = ingest(session, items[:3], workspace_id="default", default_region="US")
    assert [r.status for r in early] == ["accepted"] * 3
    with ours.write() as session:
        results = ingest(session, items + items[5:7], workspace_id="default", default_region="US")
    statuses = [r.status for r in results]
    assert statuses == ["duplicate"] * 3 + ["accepted"] * 1097 + ["duplicate"] * 2
    assert [r.index for r in results] == list(range(1102))
    with ours.read() as session:
        assert session.scalar(select(func.count()).select_from(Event)) == 1100
        counts = sorted(session.scalars(select(Batch.event_count)))
    assert counts == [3, 1097]

    # the reference: SQLAlchemy's own insert of the same normalized values
    with ours.read() as session:
        normalized = {e.message_id: e.identifiers for e in session.scalars(select(Event))}
    rows = []
    for n, source in enumerate(items):
        row = {**source, "workspace_id": "default", "identifiers": normalized[source["message_id"]]}
        row["batch_id"] = 1 if n < 3 else 2
        rows.append(row)
    with reference.write() as session:
        session.execute(EVENTS.insert(), rows)
    assert stored(tmp_path / "ours.sqlite") == stored(tmp_path / "reference.sqlite")
    with ours.read() as session:
        event = session.scalars(select(Event).where(Event.message_id == f"{run}-9")).one()
    assert event.occurred_at == T0 + timedelta(seconds=9, microseconds=9)
    assert event.occurred_at.tzinfo is UTC
    assert event.identifiers == {"user_id": "u2", "email": "u0@example.com"}
    assert event.properties == items[9]["properties"]
