"""Ingest, outbox relay and batch processing on real SQLite and PostgreSQL databases."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import func, select, update

import identity
import identity.resolve
from connectors.web import SegmentMessageError, to_touchpoint
from identity.models import Profile, ProfileTypeCount
from identity.views import find_profile_id, profile_view
from pipeline import Database, TransientError, ingest
from pipeline.events import get_event, list_events, replay, status_counts
from pipeline.models import Batch, Event
from pipeline.outbox import MAX_BATCH_ATTEMPTS, claim_due, relay
from pipeline.processing import load_batches
from workers.processing import process_batches

T0 = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)


def touch(user: str, n: int = 0, channel: str = "web", **extra: Any) -> dict[str, Any]:
    return {
        "message_id": f"{user}-{n}-{uuid.uuid4().hex[:6]}",
        "channel": channel,
        "type": "order.completed",
        "occurred_at": T0 + timedelta(minutes=n),
        "identifiers": {"user_id": user},
        **extra,
    }


def store(db: Database, items: list[dict[str, Any]]) -> list[str]:
    with db.write() as session:
        results = ingest(session, items, workspace_id="default", default_region="US")
    return [r.status for r in results]


def drain(db: Database, batch_size: int = 50) -> list[list[int]]:
    """Relay and process everything, as a worker would (same functions, no broker)."""
    published: list[list[int]] = []
    relay(db, published.append, batch_size=batch_size, lease_seconds=60)
    for message in published:
        process_batches(db, message)
    return published


def event_rows(db: Database) -> list[tuple[int, ...]]:
    """Every event row's columns: the log is append-only, so processing must not change them."""
    with db.read() as session:
        return [tuple(row) for row in session.execute(select(Event.__table__)).all()]


def test_ingest_is_idempotent_on_message_id(any_db: Database) -> None:
    items = [touch("u1", 1), touch("u1", 2)]
    assert store(any_db, items) == ["accepted", "accepted"]
    assert store(any_db, items) == ["duplicate", "duplicate"]
    assert store(any_db, [items[0], items[0]]) == ["duplicate", "duplicate"]
    fresh = touch("u1", 3)
    assert store(any_db, [fresh, fresh]) == ["accepted", "duplicate"]
    with any_db.read() as session:
        assert session.scalar(select(func.count()).select_from(Event)) == 3


def test_bad_neighbour_does_not_cost_the_others(any_db: Database) -> None:
    bad = touch("u2", 1, identifiers={"email": "nope"})
    bad.pop("identifiers")
    bad["identifiers"] = {"email": "nope"}
    wrong_type = touch("u2", 2)
    wrong_type["type"] = "Not Past Tense"
    results = store(any_db, [touch("u2", 0), bad, wrong_type, touch("u2", 3)])
    assert results == ["accepted", "rejected", "rejected", "accepted"]
    with any_db.write() as session:
        detail = ingest(session, [bad, wrong_type], workspace_id="default", default_region="US")
    assert [d.field for d in detail] == ["identifiers.email", "type"]


def test_events_are_processed_once_into_profiles(any_db: Database) -> None:
    store(any_db, [touch("alice", n, "web" if n % 2 else "pos") for n in range(4)])
    store(any_db, [touch("alice", n, "web" if n % 2 else "pos") for n in range(4, 7)])
    store(any_db, [touch("bob", n, "email") for n in range(3)])
    appended = event_rows(any_db)
    messages = drain(any_db, batch_size=4)
    # One batch per ingest call; a message carries batches up to batch_size events.
    assert [len(message) for message in messages] == [1, 1, 1]
    messages = drain(any_db, batch_size=4)
    assert messages == []
    # Processing every batch again (a republished copy) changes nothing.
    with any_db.read() as session:
        batch_ids = list(session.scalars(select(Batch.id)))
    assert process_batches(any_db, batch_ids) == 0
    assert event_rows(any_db) == appended
    with any_db.read() as session:
        assert status_counts(session) == {"pending": 0, "processed": 10, "failed": 0}
    with any_db.read() as session:
        alice = find_profile_id(session, "default", "user_id", "alice", "US")
        assert alice is not None
        view = profile_view(session, "default", alice)
    assert view is not None
    assert view["event_count"] == 7
    assert view["channels"] == {"pos": 4, "web": 3}
    assert view["first_seen_at"] == T0.isoformat()
    assert view["last_seen_at"] == (T0 + timedelta(minutes=6)).isoformat()


def test_identifiers_link_and_traits_most_recent_wins(any_db: Database) -> None:
    store(
        any_db,
        [
            touch("carol", 5, traits={"name": "Carol New"}),
            {
                **touch("carol", 1, traits={"name": "Carol Old", "city": "Oslo"}),
                "identifiers": {"anonymous_id": "anon-c", "user_id": "carol"},
            },
            {**touch("x", 2), "identifiers": {"anonymous_id": "anon-c"}},
        ],
    )
    drain(any_db)
    with any_db.read() as session:
        by_user = find_profile_id(session, "default", "user_id", "carol", "US")
        by_anon = find_profile_id(session, "default", "anonymous_id", "anon-c", "US")
        assert by_user == by_anon
        view = profile_view(session, "default", by_user or "")
    assert view is not None
    assert view["event_count"] == 3
    assert view["traits"] == {"name": "Carol New", "city": "Oslo"}


def test_relay_groups_batches_and_sweep_republishes_lost_ones(any_db: Database) -> None:
    for n in range(10):  # ten single-event ingest calls (like /v1/track)
        store(any_db, [touch("dave", n)])
    with any_db.write() as session:
        fresh = claim_due(session, batch_size=4, lease_seconds=30)
    assert [len(message) for message in fresh.messages] == [4, 4, 2]
    assert fresh.republished == 0
    # The broker "lost" them: nothing is due before the lease expires...
    with any_db.write() as session:
        assert claim_due(session, batch_size=4, lease_seconds=30).messages == []
    # ...and everything not done is due after it.
    later = datetime.now(UTC) + timedelta(seconds=31)
    with any_db.write() as session:
        again = claim_due(session, batch_size=4, lease_seconds=30, now=later)
    assert again.messages == fresh.messages and again.republished == 10
    # The lease doubles with each publish: not due again 31 s later, due after 61 s.
    with any_db.write() as session:
        soon = later + timedelta(seconds=31)
        assert claim_due(session, batch_size=4, lease_seconds=30, now=soon).messages == []
    for message in fresh.messages:
        process_batches(any_db, message)
    with any_db.write() as session:
        much_later = later + timedelta(hours=1)
        assert claim_due(session, batch_size=4, lease_seconds=30, now=much_later).messages == []
    with any_db.read() as session:
        assert status_counts(session) == {"pending": 0, "processed": 10, "failed": 0}


def test_failing_event_is_quarantined_and_replayable(
    any_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    store(any_db, [touch("erin", n) for n in range(3)])
    poison_user = "erin"
    real = identity.plan_events

    def flaky(session: Any, workspace_id: str, events: Any, **kw: Any) -> identity.Plan:
        if any(e.properties.get("poison") for e in events):
            raise RuntimeError("cannot process this one")
        return real(session, workspace_id, events, **kw)

    store(any_db, [touch(poison_user, 9, properties={"poison": True})])
    # Every processing path (optimistic, locked, one by one) plans through this function.
    monkeypatch.setattr(identity, "plan_events", flaky)
    monkeypatch.setattr(identity.resolve, "plan_events", flaky)
    drain(any_db)
    with any_db.read() as session:
        assert status_counts(session) == {"pending": 0, "processed": 3, "failed": 1}
        [failed] = list_events(session, "default", status="failed")
    assert "cannot process this one" in (failed.error or "")
    assert failed.attempts == 1
    # Replayed while still broken: it fails again, counted, still quarantined.
    with any_db.write() as session:
        assert replay(session, "default", status="failed").requeued == 1
    with any_db.read() as session:
        assert status_counts(session) == {"pending": 1, "processed": 3, "failed": 0}
    drain(any_db)
    with any_db.read() as session:
        again = get_event(session, "default", failed.event.message_id)
        assert again is not None and (again.status, again.attempts) == ("failed", 2)
    # After the fix, replay processes it once; replaying again changes nothing.
    monkeypatch.setattr(identity, "plan_events", real)
    monkeypatch.setattr(identity.resolve, "plan_events", real)
    for _ in range(2):
        with any_db.write() as session:
            replay(session, "default", status="failed")
        drain(any_db)
    with any_db.read() as session:
        total = session.scalar(select(func.sum(Profile.event_count)))
        assert total == 4
        assert session.scalar(select(func.sum(ProfileTypeCount.count))) == 4
        assert status_counts(session) == {"pending": 0, "processed": 4, "failed": 0}
        fixed = get_event(session, "default", failed.event.message_id)
        assert fixed is not None and fixed.status == "processed"
    with any_db.write() as session:
        result = replay(session, "default", message_ids=[failed.event.message_id], status=None)
    assert (result.requeued, result.skipped_processed) == (0, 1)


def test_transient_failures_are_counted_then_quarantined(any_db: Database) -> None:
    store(any_db, [touch("frank", 1)])
    published: list[list[int]] = []
    relay(any_db, published.append, batch_size=10, lease_seconds=60)
    assert len(published) == 1
    with any_db.write() as session:
        session.execute(update(Batch).values(attempts=MAX_BATCH_ATTEMPTS - 1, last_error="db gone"))
    with any_db.read() as session:
        [pending] = list_events(session, "default")
    # While it is retried it is visible as pending, with its attempts and last error.
    assert (pending.status, pending.attempts, pending.error) == ("pending", 7, "db gone")
    with any_db.write() as session:
        session.execute(update(Batch).values(attempts=MAX_BATCH_ATTEMPTS))
    assert relay(any_db, published.append, batch_size=10, lease_seconds=60).quarantined == 1
    with any_db.read() as session:
        [event] = list_events(session, "default")
    assert (event.status, event.error) == ("failed", "db gone")


def test_concurrent_workers_on_postgres_never_double_count(postgres_db: Database) -> None:
    """Two threads process overlapping customers (and one batch twice) at the same time."""
    users = [f"user-{i}" for i in range(40)]
    for n in range(5):
        for first in range(0, 40, 10):
            store(postgres_db, [touch(u, n) for u in users[first : first + 10]])
    published: list[list[int]] = []
    relay(postgres_db, published.append, batch_size=20, lease_seconds=60)
    work = published + published[:3]
    errors: list[BaseException] = []

    def worker(messages: list[list[int]]) -> None:
        for message in messages:
            for _ in range(20):
                try:
                    process_batches(postgres_db, message)
                    break
                except TransientError:
                    continue
            else:
                errors.append(RuntimeError(f"batches {message} kept failing"))

    threads = [threading.Thread(target=worker, args=(work[i::2],)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors
    with postgres_db.read() as session:
        counts = dict(session.execute(select(Profile.id, Profile.event_count)).all())
        processed = status_counts(session)["processed"]
    assert processed == 200
    assert len(counts) == 40 and set(counts.values()) == {5}


def test_a_plan_made_stale_by_another_writer_is_refused(any_db: Database) -> None:
    """Planning outside the write lock is safe: a changed profile makes the write refuse."""
    store(any_db, [touch("zed", 0)])
    drain(any_db)
    store(any_db, [touch("zed", 1), touch("zed", 2)])
    published: list[list[int]] = []
    relay(any_db, published.append, batch_size=10, lease_seconds=60)
    [first] = published
    with any_db.read() as session:
        [work] = load_batches(session, first, lock=False)
        stale = identity.plan_events(session, work.workspace_id, work.events)
    store(any_db, [touch("zed", 3)])  # another batch updates zed's profile meanwhile
    drain(any_db)
    with pytest.raises(TransientError), any_db.write() as session:
        identity.write_plan(session, stale)
    assert process_batches(any_db, first) == 2
    with any_db.read() as session:
        zed = find_profile_id(session, "default", "user_id", "zed", "US")
        view = profile_view(session, "default", zed or "")
    assert view is not None and view["event_count"] == 4


def test_segment_alias_links_the_anonymous_visitor_to_the_new_user(any_db: Database) -> None:
    received = datetime.now(UTC)
    anon = f"anon-{uuid.uuid4().hex[:8]}"
    page = to_touchpoint(
        {"type": "page", "anonymousId": anon, "name": "Home"},
        received_at=received,
        default_region="US",
    )
    alias = to_touchpoint(
        {"type": "alias", "previousId": anon, "userId": "ursula"},
        received_at=received,
        default_region="US",
    )
    store(any_db, [page])
    drain(any_db)
    store(any_db, [alias])
    drain(any_db)
    with any_db.read() as session:
        by_user = find_profile_id(session, "default", "user_id", "ursula", "US")
        assert by_user == find_profile_id(session, "default", "anonymous_id", anon, "US")
        view = profile_view(session, "default", by_user or "")
    assert view is not None and view["event_count"] == 2
    with pytest.raises(SegmentMessageError) as caught:
        to_touchpoint({"type": "alias", "userId": "u"}, received_at=received, default_region="US")
    assert caught.value.field == "previousId"


def test_ingest_stores_every_field_exactly(any_db: Database) -> None:
    """Quotes, backslashes, unicode, nesting and microseconds survive the bulk insert."""
    odd = 'He said "hi" \\ back\\slash, ünïcødé ✓, tab\there'
    item = {
        "message_id": f'odd "id" \\ {uuid.uuid4().hex[:6]}',
        "channel": "web",
        "type": "page.viewed",
        "occurred_at": datetime(2026, 11, 1, 9, 0, 0, 123456, tzinfo=timezone(timedelta(hours=5))),
        "received_at": datetime(2026, 11, 1, 4, 0, 1, 7, tzinfo=UTC),
        "source": "api",
        "identifiers": {"user_id": odd},
        "traits": {"name": odd, "nested": {"list": [1, 2.5, None, True, odd]}},
        "properties": {"empty": {}, "deep": [[{"k": odd}]], "big": 2**53},
        "context": {"page": {"url": 'https://x.example/?q=a&b="c"'}},
    }
    assert store(any_db, [item]) == ["accepted"]
    with any_db.read() as session:
        record = get_event(session, "default", item["message_id"])
    assert record is not None
    event = record.event
    assert event.occurred_at == item["occurred_at"] and event.occurred_at.tzinfo == UTC
    assert event.received_at == item["received_at"]
    stored = (event.identifiers, event.traits, event.properties, event.context)
    assert stored == (item["identifiers"], item["traits"], item["properties"], item["context"])
