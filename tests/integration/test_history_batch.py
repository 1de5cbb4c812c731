"""Batch history aggregates equal the per-event ones, on random histories (SQLite, PostgreSQL)."""

from __future__ import annotations

import random
import uuid
from datetime import timedelta

from sqlalchemy import select
from test_rules_store import T, agg, store_and_process, touch

from identity.models import ProfileEvent
from personalization.rules import history_value
from personalization.rules.history_batch import HistoryRequest, history_for_events
from pipeline import Database

AGGREGATES = [
    "history.count(type=order.completed)",
    "history.count(type=order.completed, window=30d)",
    "history.count(type=order.*, window=7d)",
    "history.count()",
    "history.count(channel=pos)",
    "history.sum(type=order.completed, property=total)",
    "history.sum(type=order.completed, property=total, window=90d)",
    "history.days_since(type=page.viewed)",
    "history.days_since(type=order.completed, window=60d)",
    "history.days_since()",
    "history.days_since(channel=web)",
    "history.days_since(type=order.*, channel=pos)",
]


def test_batch_values_equal_per_event_values(any_db: Database) -> None:
    rng = random.Random(7)
    users = [f"hb-{uuid.uuid4().hex[:8]}" for _ in range(6)]
    items = []
    for user in users:
        for _ in range(rng.randint(0, 40)):
            kinds = ["order.completed", "order.refunded", "page.viewed", "product.viewed"]
            kind = rng.choice(kinds)
            channel = rng.choice(["web", "pos", "email"])
            total = rng.choice([10, 25.5, "n/a", True, 300])
            items.append(touch(user, kind, rng.uniform(-200, 5), channel, total=total))
        # two events at the very same time (ties)
        items.append(touch(user, "order.completed", -1, "pos", total=5))
        items.append(touch(user, "page.viewed", -1, "web"))
    store_and_process(any_db, items)
    aggregates = frozenset(agg(text) for text in AGGREGATES)
    with any_db.read() as session:
        rows = session.execute(
            select(ProfileEvent.event_id, ProfileEvent.profile_id, ProfileEvent.occurred_at).where(
                ProfileEvent.workspace_id == "default"
            )
        ).all()
        assert len(rows) == len(items)
        # a batch of the later events (as a live batch would be), and one of all of them
        later = [r for r in rows if r.occurred_at > T - timedelta(days=10)]
        for chosen in (later, rows):
            requests = [
                HistoryRequest(r.event_id, r.profile_id, r.occurred_at, aggregates) for r in chosen
            ]
            batch = history_for_events(session, "default", requests)
            for request in requests:
                for aggregate in aggregates:
                    single = history_value(
                        session,
                        "default",
                        request.profile_id,
                        aggregate,
                        request.as_of,
                        current_event_id=request.event_id,
                    )
                    got = batch[request.event_id][aggregate]
                    if isinstance(single, float) and got is not None:
                        assert abs(got - single) < 1e-6, (aggregate.text, request)
                    else:
                        assert got == single, (aggregate.text, request)
