"""Rules fire while batches are processed, exactly once, on real SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from conftest import ingest_and_process
from sqlalchemy import select
from sqlalchemy.orm import Session

from personalization import loyalty
from personalization.actions import Action
from personalization.rules import apply_rule_set, check_rule_set
from personalization.rules.fire import fire_rules, list_firings
from personalization.rules.models import RuleFiring
from pipeline import Database
from pipeline.events import get_event
from pipeline.models import Event
from pipeline.processing import StoredEvent
from workers.processing import process_batches

WS = "default"
T0 = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
ORDERS = "history.count(type=order.completed, window=30d)"


def order(email: str, day: int, total: float, channel: str = "pos") -> dict[str, Any]:
    return {
        "message_id": f"rf-{uuid.uuid4().hex}",
        "channel": channel,
        "type": "order.completed",
        "occurred_at": T0 + timedelta(days=day),
        "identifiers": {"email": email},
        "traits": {"first_name": "Ann"},
        "properties": {"total": total},
    }


def rule(rule_id: str, actions: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {
        "id": rule_id,
        "name": f"rule {rule_id}",
        "trigger": {"types": ["order.completed"]},
        "actions": actions,
        **extra,
    }


def email(subject: str, text: str = "Hello {{ profile.traits.first_name }}") -> dict[str, Any]:
    return {"type": "send_email", "subject": subject, "text": text}


WELCOME = rule(
    "welcome",
    [email("Welcome, {{ profile.traits.first_name }}!")],
    priority=200,
    conditions={"all": [{"field": "history.count(type=order.completed)", "op": "eq", "value": 1}]},
)
POINTS = rule("points", [{"type": "award_points", "per_property": "total", "reason": "order"}])
THIRD = rule(
    "third-order",
    [email("Your third order this month"), {"type": "add_tag", "tag": "regular"}],
    conditions={"all": [{"field": ORDERS, "op": "eq", "value": 3}]},
)


def apply(db: Database, *rules: dict[str, Any]) -> None:
    with db.write() as session:
        apply_rule_set(session, WS, check_rule_set({"rules": list(rules)}), source="test")


def run(db: Database, *batches: list[dict[str, Any]]) -> list[list[int]]:
    """Ingest and process each list as one batch; returns the messages processed."""
    return ingest_and_process(db, *batches)


def event_id(db: Database, item: dict[str, Any]) -> int:
    with db.read() as session:
        record = get_event(session, WS, item["message_id"])
        assert record is not None and record.status == "processed", record
        return record.event.id


def firings(db: Database, rule_id: str | None = None) -> list[RuleFiring]:
    with db.read() as session:
        query = select(RuleFiring).order_by(RuleFiring.id)
        if rule_id is not None:
            query = query.where(RuleFiring.rule_id == rule_id)
        return list(session.scalars(query))


def actions(db: Database, origin: str) -> list[Action]:
    with db.read() as session:
        return list(session.scalars(select(Action).where(Action.origin == origin)))


def balance_of(db: Database, profile_id: str | None) -> int:
    assert profile_id is not None
    with db.read() as session:
        return loyalty.balance(session, WS, profile_id)


def stored(db: Database, items: list[dict[str, Any]]) -> list[StoredEvent]:
    with db.read() as session:
        rows = session.scalars(
            select(Event)
            .where(Event.message_id.in_([i["message_id"] for i in items]))
            .order_by(Event.id)
        )
        return [
            StoredEvent(
                id=e.id,
                workspace_id=e.workspace_id,
                message_id=e.message_id,
                channel=e.channel,
                type=e.type,
                occurred_at=e.occurred_at,
                identifiers=e.identifiers,
                traits=e.traits,
                properties=e.properties,
                source=e.source,
            )
            for e in rows
        ]


def test_welcome_once_points_per_order_and_the_third_order(any_db: Database) -> None:
    apply(any_db, WELCOME, POINTS, THIRD)
    address = f"ann-{uuid.uuid4().hex[:8]}@example.com"
    first, second, third = order(address, 0, 40), order(address, 3, 25.4), order(address, 9, 10)
    run(any_db, [first], [second], [third])

    [welcome] = actions(any_db, "rule:welcome@1")
    assert welcome.recipient == address and welcome.kind == "email.send"
    assert welcome.payload["subject"] == "Welcome, Ann!"
    assert welcome.idempotency_key == f"rule:welcome:{event_id(any_db, first)}:0"
    assert [f.event_id for f in firings(any_db, "welcome")] == [event_id(any_db, first)]

    point_firings = firings(any_db, "points")
    assert len(point_firings) == 3
    assert balance_of(any_db, point_firings[0].profile_id) == 40 + 25 + 10

    [fired] = firings(any_db, "third-order")
    assert fired.event_id == event_id(any_db, third) and fired.rule_version == 1
    assert fired.trace == [
        {
            "path": "conditions.all[0]",
            "field": ORDERS,
            "op": "eq",
            "value": 3,
            "seen": 3,
            "matched": True,
        }
    ]
    assert [o["status"] for o in fired.outcomes] == ["queued", "added"]
    assert len(actions(any_db, "rule:third-order@1")) == 1
    with any_db.read() as session:
        page = list_firings(session, WS, "points", limit=2)
        rest = list_firings(session, WS, "points", after=page[-1]["id"])
    assert [f["event_id"] for f in page + rest] == [
        event_id(any_db, e) for e in (first, second, third)
    ]
    assert page[0]["outcomes"] == [
        {"type": "award_points", "status": "awarded", "points": 40, "balance": 40}
    ]


def test_stop_prevents_lower_priority_rules(any_db: Database) -> None:
    apply(
        any_db,
        rule("vip", [email("VIP")], priority=500, stop=True),
        rule("later", [{"type": "award_points", "points": 5}], priority=10),
    )
    item = order(f"bo-{uuid.uuid4().hex[:8]}@example.com", 0, 99)
    run(any_db, [item])
    assert [f.rule_id for f in firings(any_db)] == ["vip"]
    assert firings(any_db, "later") == []


def test_a_retried_batch_fires_nothing_twice(any_db: Database) -> None:
    apply(any_db, WELCOME, POINTS)
    address = f"cy-{uuid.uuid4().hex[:8]}@example.com"
    items = [order(address, 0, 30), order(address, 1, 20)]
    messages = run(any_db, items)
    profile_id = firings(any_db, "points")[0].profile_id
    assert balance_of(any_db, profile_id) == 50

    for message in messages:  # the broker delivers the message again: the batch is done
        assert process_batches(any_db, message) == 0
    with any_db.write() as session:  # firing again for the same events (a replay)
        stats = fire_rules(session, WS, stored(any_db, items))
    assert stats.fired == 0 and stats.already_fired == 3 and stats.actions == 0
    assert balance_of(any_db, profile_id) == 50
    assert len(actions(any_db, "rule:welcome@1")) == 1
    assert len(firings(any_db)) == 3


def test_a_rolled_back_batch_leaves_no_firing(any_db: Database) -> None:
    apply(any_db, POINTS)
    item = order(f"dee-{uuid.uuid4().hex[:8]}@example.com", 0, 12)
    run(any_db, [item])
    with any_db.engine.connect() as conn, Session(conn) as session:
        session.execute(RuleFiring.__table__.delete())
        stats = fire_rules(session, WS, stored(any_db, [item]))
        assert stats.fired == 1
        session.rollback()  # the crash: nothing of the firing stays
    [kept] = firings(any_db)
    assert balance_of(any_db, kept.profile_id) == 12


def test_a_template_error_is_a_failed_outcome_and_the_batch_completes(any_db: Database) -> None:
    apply(
        any_db,
        rule(
            "broken",
            [
                email("Total {{ event.properties.total / 0 }}"),
                {"type": "award_points", "points": 3},
            ],
        ),
        rule("short", [{"type": "deduct_points", "points": 1000}], priority=1),
    )
    item = order(f"eve-{uuid.uuid4().hex[:8]}@example.com", 0, 12)
    run(any_db, [item])
    assert event_id(any_db, item)  # processed
    [broken] = firings(any_db, "broken")
    failed, awarded = broken.outcomes
    assert failed["status"] == "failed" and "ZeroDivisionError" in failed["error"]
    assert awarded["status"] == "awarded"
    [short] = firings(any_db, "short")
    assert short.outcomes[0]["status"] == "failed"
    assert "insufficient points" in short.outcomes[0]["error"]
    assert balance_of(any_db, broken.profile_id) == 3
    assert actions(any_db, "rule:broken@1") == []


def test_without_rules_processing_is_unchanged(any_db: Database) -> None:
    address = f"flo-{uuid.uuid4().hex[:8]}@example.com"
    items = [order(address, 0, 10), order(address, 1, 10)]
    run(any_db, items)
    assert firings(any_db) == []
    with any_db.read() as session:
        record = get_event(session, WS, items[1]["message_id"])
    assert record is not None and record.status == "processed"
    with any_db.write() as session:
        stats = fire_rules(session, WS, stored(any_db, items))
    assert stats.evaluated == 0 and stats.fired == 0
