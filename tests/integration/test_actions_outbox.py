"""The action outbox on SQLite and PostgreSQL: idempotency, claims, relay leases, recovery."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from outbound import WS, queue, runtime_for, view
from sqlalchemy import update

from personalization import IdempotencyConflict, NewAction, NotRetryable, enqueue, retry
from personalization.actions import Action, backoff_seconds, claim
from pipeline import Database, utcnow
from workers.delivery import relay_actions


def new(text: str = "hello", key: str | None = "order-7-shipped") -> NewAction:
    return NewAction(
        kind="email.send",
        recipient="ana@example.com",
        payload={"subject": "Shipped", "text": text},
        idempotency_key=key,
        origin="rule:shipping@3",
    )


def test_idempotency_key_queues_once(any_db: Database) -> None:
    with any_db.write() as session:
        first = enqueue(session, WS, new())
    with any_db.write() as session:
        again = enqueue(session, WS, new())
    assert first.created and not again.created
    assert again.action.id == first.action.id and first.action.id.startswith("act_")
    with pytest.raises(IdempotencyConflict), any_db.write() as session:
        enqueue(session, WS, new(text="something else"))
    with any_db.write() as session:  # no key: every request is its own action
        a, b = enqueue(session, WS, new(key=None)), enqueue(session, WS, new(key=None))
    assert a.created and b.created and a.action.id < b.action.id  # time-ordered ids
    assert a.action.idempotency_key == a.action.id


def test_one_claim_wins_and_the_relay_leases_what_it_publishes(
    any_db: Database, tmp_path: Path
) -> None:
    runtime = runtime_for(any_db, tmp_path)
    first = queue(runtime, {"kind": "sms.send", "to": "+14155550100", "text": "a"})
    second = queue(runtime, {"kind": "sms.send", "to": "+14155550101", "text": "b"})
    published: list[str] = []

    assert relay_actions(runtime, published.append) == 2
    assert sorted(published) == sorted([first, second])
    assert relay_actions(runtime, published.append) == 0  # leased: on the broker already

    with any_db.write() as session:
        claimed = claim(session, first, lease_seconds=60)
        assert claimed is not None and claimed.attempts == 1 and claimed.status == "sending"
    with any_db.write() as session:
        assert claim(session, first, lease_seconds=60) is None  # a second copy of the task

    with any_db.write() as session:  # the broker lost the other task; its lease ends
        session.execute(
            update(Action)
            .where(Action.id == second)
            .values(lease_until=utcnow() - timedelta(seconds=1))
        )
    assert relay_actions(runtime, published.append) == 1 and published[-1] == second


def test_a_send_abandoned_by_a_lost_worker_is_recovered(any_db: Database, tmp_path: Path) -> None:
    runtime = runtime_for(any_db, tmp_path)
    action_id = queue(runtime, {"kind": "sms.send", "to": "+14155550100", "text": "a"})
    with any_db.write() as session:
        assert claim(session, action_id, lease_seconds=60) is not None
    published: list[str] = []
    assert relay_actions(runtime, published.append) == 0  # sending, lease still running

    with any_db.write() as session:
        session.execute(
            update(Action)
            .where(Action.id == action_id)
            .values(lease_until=utcnow() - timedelta(seconds=1))
        )
    assert relay_actions(runtime, published.append) == 1 and published == [action_id]
    shown = view(runtime, action_id)
    assert shown["status"] == "queued" and shown["attempts"] == 1
    assert "interrupted" in shown["last_error"]


def test_only_failed_actions_are_retried(sqlite_db: Database, tmp_path: Path) -> None:
    runtime = runtime_for(sqlite_db, tmp_path)
    action_id = queue(runtime, {"kind": "sms.send", "to": "+14155550100", "text": "a"})
    with pytest.raises(NotRetryable), sqlite_db.write() as session:
        retry(session, WS, action_id)


def test_backoff_doubles_from_30_seconds_up_to_an_hour() -> None:
    assert [backoff_seconds(n) for n in range(1, 10)] == [
        30,
        60,
        120,
        240,
        480,
        960,
        1920,
        3600,
        3600,
    ]
    # ECRM_ACTION_RETRY_SECONDS sets the first wait; the cap stays an hour
    assert [backoff_seconds(n, 2.0) for n in (1, 2, 3, 12)] == [2, 4, 8, 3600]
