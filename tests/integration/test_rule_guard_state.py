"""Rule guards on SQLite and PostgreSQL: GuardState.read, and guards kept by the store."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.orm import Session

from personalization.actions import EMAIL_REPLY, EMAIL_SEND, SMS_SEND, Action
from personalization.rules import apply_rule_set, check_rule_set, load_rules
from personalization.rules.guards import CHANNEL_CAP, FREQUENCY_CAP, HOLDOUT, GuardState
from personalization.rules.models import RuleFiring
from personalization.rules.schema import Cap, CompiledRule
from personalization.rules.store import digest
from pipeline import Database

WS = "default"
NOW = datetime(2026, 6, 10, 12, 0, tzinfo=UTC)
EMAIL = {"type": "send_email", "subject": "Hi", "text": "Hello"}
SMS = {"type": "send_sms", "text": "Hi"}
CAPS = {"email": Cap(2, timedelta(days=7)), "sms": Cap(1, timedelta(days=1))}


def rule(rule_id: str, actions: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {
        "id": rule_id,
        "name": f"rule {rule_id}",
        "trigger": {"types": ["order.completed"]},
        "actions": actions,
        **extra,
    }


def compiled(*rules: dict[str, Any]) -> list[CompiledRule]:
    return list(check_rule_set({"rules": list(rules)}).rules)


WEEKLY = rule("weekly", [EMAIL], guards={"frequency": {"max": 1, "per": "7d"}})
MONTHLY = rule(
    "monthly",
    [SMS],
    guards={"frequency": [{"max": 2, "per": "30d"}, {"max": 1, "per": "1h"}]},
)
PLAIN = rule("plain", [EMAIL])


def firing(rule_id: str, profile_id: str, ago: timedelta, **extra: Any) -> RuleFiring:
    return RuleFiring(
        workspace_id=WS,
        rule_id=rule_id,
        rule_version=1,
        event_id=int(uuid.uuid4().int % 2**62),
        profile_id=profile_id,
        matched=extra.pop("matched", True),
        held=extra.pop("held", None),
        trace=[],
        outcomes=[],
        created_at=NOW - ago,
    )


def message(kind: str, profile_id: str | None, ago: timedelta, status: str = "sent") -> Action:
    when = NOW - ago
    return Action(
        id=f"act_{uuid.uuid4().hex}",
        workspace_id=WS,
        kind=kind,
        profile_id=profile_id,
        recipient="x@example.com" if kind != SMS_SEND else "+15550100",
        payload={},
        idempotency_key=uuid.uuid4().hex,
        origin="api",
        status=status,
        attempts=0,
        due_at=when,
        created_at=when,
        updated_at=when,
    )


@pytest.fixture
def statements(any_db: Database) -> Iterator[list[str]]:
    """The queries (``SELECT``) run on the database while the test runs."""
    seen: list[str] = []

    def record(*args: Any) -> None:
        if args[2].lstrip().upper().startswith("SELECT"):
            seen.append(args[2])

    event.listen(any_db.engine, "before_cursor_execute", record)
    yield seen
    event.remove(any_db.engine, "before_cursor_execute", record)


def read(session: Session, profiles: list[str], rules: list[CompiledRule]) -> GuardState:
    return GuardState.read(session, WS, profiles, rules, NOW, CAPS)


def test_read_counts_firings_that_ran_and_messages_that_count(
    any_db: Database, statements: list[str]
) -> None:
    day, hour = timedelta(days=1), timedelta(hours=1)
    with any_db.write() as session:
        session.add_all(
            [
                firing("weekly", "p1", 6 * day),  # within 7 days: caps
                firing("weekly", "p2", 8 * day),  # too old
                firing("weekly", "p3", 2 * day, held=HOLDOUT),  # actions did not run
                firing("weekly", "p3", 2 * day, held=FREQUENCY_CAP),
                firing("weekly", "p4", 2 * day, matched=False),  # a traced near miss
                firing("weekly", "p5", 2 * day),  # a profile not asked about
                firing("plain", "p2", hour),  # plain has no caps: not read
                firing("monthly", "p1", 20 * day),
                firing("monthly", "p1", 29 * day),
                firing("monthly", "p2", 10 * day),
                firing("monthly", "p3", 10 * hour),
                message(EMAIL_SEND, "p1", day),
                message(EMAIL_REPLY, "p1", 2 * day, status="queued"),
                message(EMAIL_SEND, "p2", day, status="suppressed"),  # never delivered
                message(EMAIL_SEND, "p2", day, status="failed"),
                message(EMAIL_SEND, "p2", 8 * day),  # too old
                message(EMAIL_SEND, "p3", day, status="sending"),
                message(SMS_SEND, "p3", 2 * hour),
                message(SMS_SEND, "p4", 25 * hour),  # older than the sms cap's day
                message(EMAIL_SEND, None, hour),  # no profile
            ]
        )
    rules = compiled(WEEKLY, MONTHLY, PLAIN)
    weekly, monthly, plain = rules
    profiles = ["p1", "p2", "p3", "p4"]
    statements.clear()
    with any_db.read() as session:
        state = read(session, profiles, rules)
    assert len(statements) == 2  # firings and messages, for all profiles at once

    assert state.check(weekly, "p1", ["email"], NOW) == FREQUENCY_CAP
    for other in ("p2", "p3", "p4"):
        assert state.check(weekly, other, [], NOW) is None, other
    assert state.check(monthly, "p1", [], NOW) == FREQUENCY_CAP  # 2 in 30 days
    assert state.check(monthly, "p2", [], NOW) is None
    assert state.check(monthly, "p3", [], NOW) is None  # 10 hours ago: the 1h cap has room
    assert state.check(monthly, "p3", [], NOW - 9 * hour - 30 * timedelta(minutes=1)) == (
        FREQUENCY_CAP
    )
    assert ("plain", "p2") not in state.firings

    # email: 2 per 7 days; p1 has a sent email and a queued reply
    assert state.check(plain, "p1", ["email"], NOW) == CHANNEL_CAP
    assert state.check(plain, "p2", ["email"], NOW) is None  # suppressed/failed/old: none
    assert state.check(plain, "p3", ["email"], NOW) is None  # 1 of 2
    # sms: 1 per day
    assert state.check(monthly, "p3", ["sms"], NOW) == CHANNEL_CAP
    assert state.check(monthly, "p1", ["sms"], NOW) == FREQUENCY_CAP
    assert state.check(plain, "p4", ["sms"], NOW) is None
    # a second firing in the same batch is capped in memory
    state.note(plain, "p3", ["email"], NOW)
    assert state.check(plain, "p3", ["email"], NOW) == CHANNEL_CAP


def test_read_chunks_many_profiles_and_skips_queries_it_does_not_need(
    any_db: Database, statements: list[str]
) -> None:
    profiles = [f"p{n:04d}" for n in range(1000)]
    with any_db.write() as session:
        session.add_all(firing("weekly", pid, timedelta(days=1)) for pid in profiles[::3])
        session.add_all(message(SMS_SEND, pid, timedelta(hours=1)) for pid in profiles[1::3])
    weekly, plain_sms = compiled(WEEKLY, rule("plain-sms", [SMS]))
    statements.clear()
    with any_db.read() as session:
        state = read(session, profiles, [weekly, plain_sms])
    assert len(statements) == 6  # 3 chunks of at most 400 profiles, 2 queries each
    capped = {pid for pid in profiles if state.check(weekly, pid, [], NOW)}
    assert capped == set(profiles[::3])
    sms_capped = {pid for pid in profiles if state.check(plain_sms, pid, ["sms"], NOW)}
    assert sms_capped == set(profiles[1::3])

    statements.clear()
    with any_db.read() as session:
        # no frequency caps and no capped channel the rules send on: no query at all
        GuardState.read(session, WS, profiles, compiled(PLAIN), NOW, {"sms": CAPS["sms"]})
        GuardState.read(session, WS, profiles, compiled(PLAIN), NOW, {})
        GuardState.read(session, WS, [], [weekly], NOW, CAPS)
    assert statements == []


def test_the_store_keeps_guards_and_trace(any_db: Database) -> None:
    guarded = rule(
        "guarded",
        [EMAIL],
        guards={
            "frequency": [{"max": 1, "per": "7d"}, {"max": 3, "per": "30m"}],
            "quiet_hours": {"start": "21:00", "end": "08:00", "timezone": "Europe/Berlin"},
            "holdout": 12.5,
        },
        trace=True,
    )
    plain = rule("plain", [EMAIL])
    checked = check_rule_set({"rules": [guarded, plain]})
    with any_db.write() as session:
        first = apply_rule_set(session, WS, checked, source="test")
    assert first.created == {"guarded": 1, "plain": 1}
    with any_db.read() as session:
        loaded = {r.id: r for r in load_rules(session, WS)}
    by_id = checked.by_id()
    for rule_id in ("guarded", "plain"):
        assert loaded[rule_id].guards == by_id[rule_id].guards
        assert loaded[rule_id].trace == by_id[rule_id].trace
        assert loaded[rule_id].definition == by_id[rule_id].definition
    assert loaded["guarded"].guards.holdout == 12.5 and loaded["guarded"].trace
    # a rule without guards stores what it stored before guards existed
    assert digest(loaded["plain"].definition) == digest(
        {
            "id": "plain",
            "name": "rule plain",
            "enabled": True,
            "priority": 100,
            "stop": False,
            "trigger": {"types": ["order.completed"], "channels": []},
            "actions": [EMAIL],
            "guards": {},
        }
    )
    with any_db.write() as session:
        again = apply_rule_set(session, WS, checked, source="test")
        changed = apply_rule_set(
            session,
            WS,
            check_rule_set({"rules": [{**guarded, "guards": {"holdout": 20}}, plain]}),
            source="test",
        )
    assert not again.changed
    assert changed.updated == {"guarded": 2} and changed.unchanged == {"plain": 1}
