"""Points follow their events when an unmerge moves the events to another profile."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select
from test_unmerge import CONFIG, WS, ev, profile_holding, run

from identity.unmerge import unmerge
from personalization.loyalty import award, balance, deduct
from personalization.loyalty.models import LoyaltyEntry
from personalization.loyalty.moves import follow_events
from pipeline import Database
from pipeline.events import get_event


def event_id(db: Database, item: dict[str, Any]) -> int:
    with db.read() as session:
        record = get_event(session, WS, item["message_id"])
        assert record is not None
        return int(record.event.id)


def test_points_of_a_moved_order_go_with_it_once(any_db: Database) -> None:
    t = uuid.uuid4().hex[:8]
    email, phone = f"ann-{t}@example.com", "+14155550177"
    web_order = ev(0, email=email)
    shop_order = ev(1, source="pos-1", phone=phone)
    both = ev(2, email=email, phone=phone)
    run(any_db, [web_order], [shop_order], [both])
    pid = profile_holding(any_db, "email", email)
    assert profile_holding(any_db, "phone", phone) == pid
    with any_db.write() as session:
        for item, points in ((web_order, 50), (shop_order, 120)):
            award(
                session,
                WS,
                pid,
                points,
                reason="order",
                source="test",
                event_id=event_id(any_db, item),
            )
    with any_db.write() as session:
        result = unmerge(session, WS, pid, identifier=("phone", phone), config=CONFIG)
        ids = [p["id"] for p in result["profiles"]] + result["redirected"]
        moves = follow_events(session, WS, ids, split_id=result["split_id"])
    shop = profile_holding(any_db, "phone", phone)
    assert shop != pid
    assert moves.view()["moved"] == [
        {"event_id": event_id(any_db, shop_order), "from": pid, "to": shop, "points": 120}
    ]
    with any_db.read() as session:
        assert balance(session, WS, pid) == 50
        assert balance(session, WS, shop) == 120
        # append-only: the award is still there, beside the two compensating entries
        kinds = session.scalars(
            select(LoyaltyEntry.kind).where(LoyaltyEntry.source == f"unmerge:{result['split_id']}")
        ).all()
        assert sorted(kinds) == ["adjust", "adjust"]
    with any_db.write() as session:  # following again changes nothing
        again = follow_events(session, WS, ids, split_id=result["split_id"])
    assert again.moved == [] and again.short == {}


def test_points_already_spent_are_reported_short(any_db: Database) -> None:
    t = uuid.uuid4().hex[:8]
    email, phone = f"bo-{t}@example.com", "+14155550178"
    web_order, shop_order = ev(0, email=email), ev(1, source="pos-1", phone=phone)
    run(any_db, [web_order], [shop_order], [ev(2, email=email, phone=phone)])
    pid = profile_holding(any_db, "email", email)
    with any_db.write() as session:
        award(
            session,
            WS,
            pid,
            100,
            reason="order",
            source="test",
            event_id=event_id(any_db, shop_order),
        )
        deduct(session, WS, pid, 70, reason="coffee", source="test")
    with any_db.write() as session:
        result = unmerge(session, WS, pid, identifier=("phone", phone), config=CONFIG)
        ids = [p["id"] for p in result["profiles"]] + result["redirected"]
        moves = follow_events(session, WS, ids, split_id=result["split_id"])
    shop = profile_holding(any_db, "phone", phone)
    assert moves.short == {event_id(any_db, shop_order): 70}
    with any_db.read() as session:
        assert balance(session, WS, pid) == 0
        assert balance(session, WS, shop) == 30
