"""Ingest, outbox relay and batch processing on real SQLite and PostgreSQL databases."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, update

import identity
import identity.resolve
from identity.models import Profile, ProfileChannelCount
from identity.views import find_profile_id, profile_view
from pipeline import Database, TransientError, ingest
from pipeline.events import replay
from pipeline.models import Batch, Event
from pipeline.outbox import MAX_BATCH_ATTEMPTS, claim_due, claim_unbatched, relay
from pipeline.processing import load_batch
from workers.processing import process_batch

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


def drain(db: Database, batch_size: int = 50) -> list[int]:
    """Relay and process everything, as a worker would (same functions, no broker)."""
    published: list[int] = []
    relay(db, published.append, batch_size=batch_size, lease_seconds=60)
    for batch_id in published:
        process_batch(db, batch_id)
    return published


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
    store(any_db, [touch("alice", n, "web" if n % 2 else "pos") for n in range(7)])
    store(any_db, [touch("bob", n, "email") for n in range(3)])
    batches = drain(any_db, batch_size=4)
    assert len(batches) == 3
    # Processing every batch again (a republished copy) changes nothing.
    for batch_id in batches:
        assert process_batch(any_db, batch_id) == 0
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


def test_relay_batches_and_sweep_republishes_lost_batches(any_db: Database) -> None:
    store(any_db, [touch("dave", n) for n in range(10)])
    with any_db.write() as session:
        fresh = claim_unbatched(session, batch_size=4, lease_seconds=30)
    assert len(fresh) == 3
    # The broker "lost" them: nothing is due before the lease expires...
    with any_db.write() as session:
        assert claim_due(session, lease_seconds=30) == []
    # ...and everything not done is due after it.
    later = datetime.now(UTC) + timedelta(seconds=31)
    with any_db.write() as session:
        assert sorted(claim_due(session, lease_seconds=30, now=later)) == sorted(fresh)
    for batch_id in fresh:
        process_batch(any_db, batch_id)
    with any_db.write() as session:
        much_later = later + timedelta(hours=1)
        assert claim_due(session, lease_seconds=30, now=much_later) == []


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
        statuses = dict(
            session.execute(select(Event.status, func.count()).group_by(Event.status)).all()
        )
        failed = session.scalars(select(Event).where(Event.status == "failed")).one()
    assert statuses == {"processed": 3, "failed": 1}
    assert "cannot process this one" in (failed.error or "")
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
        assert session.scalar(select(func.sum(ProfileChannelCount.count))) == 4
    with any_db.write() as session:
        result = replay(session, "default", message_ids=[failed.message_id], status=None)
    assert (result.requeued, result.skipped_processed) == (0, 1)


def test_transient_failures_are_counted_then_quarantined(any_db: Database) -> None:
    store(any_db, [touch("frank", 1)])
    published: list[int] = []
    relay(any_db, published.append, batch_size=10, lease_seconds=60)
    assert len(published) == 1
    with any_db.write() as session:
        session.execute(update(Batch).values(attempts=MAX_BATCH_ATTEMPTS, last_error="db gone"))
    relay(any_db, published.append, batch_size=10, lease_seconds=60)
    with any_db.read() as session:
        event = session.scalars(select(Event)).one()
    assert (event.status, event.error) == ("failed", "db gone")


def test_concurrent_workers_on_postgres_never_double_count(postgres_db: Database) -> None:
    """Two threads process overlapping customers (and one batch twice) at the same time."""
    users = [f"user-{i}" for i in range(40)]
    store(postgres_db, [touch(u, n) for n in range(5) for u in users])
    published: list[int] = []
    relay(postgres_db, published.append, batch_size=20, lease_seconds=60)
    work = published + published[:3]
    errors: list[BaseException] = []

    def worker(ids: list[int]) -> None:
        for batch_id in ids:
            for _ in range(20):
                try:
                    process_batch(postgres_db, batch_id)
                    break
                except TransientError:
                    continue
            else:
                errors.append(RuntimeError(f"batch {batch_id} kept failing"))

    threads = [threading.Thread(target=worker, args=(work[i::2],)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors
    with postgres_db.read() as session:
        counts = dict(session.execute(select(Profile.id, Profile.event_count)).all())
        processed = session.scalar(
            select(func.count()).select_from(Event).where(Event.status == "processed")
        )
    assert processed == 200
    assert len(counts) == 40 and set(counts.values()) == {5}


def test_a_plan_made_stale_by_another_writer_is_refused(any_db: Database) -> None:
    """Planning outside the write lock is safe: a changed profile makes the write refuse."""
    store(any_db, [touch("zed", 0)])
    drain(any_db)
    store(any_db, [touch("zed", 1), touch("zed", 2)])
    published: list[int] = []
    relay(any_db, published.append, batch_size=10, lease_seconds=60)
    [first] = published
    with any_db.read() as session:
        work = load_batch(session, first)
        assert work is not None
        stale = identity.plan_events(session, work.workspace_id, work.events)
    store(any_db, [touch("zed", 3)])  # another batch updates zed's profile meanwhile
    drain(any_db)
    with pytest.raises(TransientError), any_db.write() as session:
        identity.write_plan(session, stale)
    assert process_batch(any_db, first) == 2
    with any_db.read() as session:
        zed = find_profile_id(session, "default", "user_id", "zed", "US")
        view = profile_view(session, "default", zed or "")
    assert view is not None and view["event_count"] == 4
