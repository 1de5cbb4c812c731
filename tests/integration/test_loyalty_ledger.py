"""The loyalty ledger on real SQLite and PostgreSQL: idempotency, balance = ledger sum,
insufficient points, FIFO expiry, tier changes on the change feed, merged profiles, and two
transactions racing for the last points."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from conftest import ingest_and_process
from sqlalchemy import func, select

from identity.changes import changes_after
from identity.models import ProfileChange
from identity.views import event_views
from personalization.loyalty import (
    IdempotencyConflict,
    InsufficientPoints,
    LoyaltyAccount,
    LoyaltyConfig,
    LoyaltyEntry,
    ProfileNotFound,
    UnknownReward,
    adjust,
    award,
    balance,
    deduct,
    expire_due,
    history,
    redeem_reward,
    set_tier,
    summary,
    tier,
)
from pipeline import Database, ValidationError
from pipeline.events import get_event

WS = "default"
T0 = datetime(2026, 1, 10, 12, 0, tzinfo=UTC)
CONFIG = LoyaltyConfig.from_mapping(
    {
        "expiry_months": 6,
        "tiers": [{"name": "silver", "threshold": 500}, {"name": "gold", "threshold": 2000}],
        "rewards": [{"id": "coffee", "name": "Free coffee", "points": 150}],
    }
)


def process(db: Database, items: list[dict[str, Any]]) -> None:
    ingest_and_process(db, items, batch_size=50)


def event(identifiers: dict[str, str], minute: int = 0) -> dict[str, Any]:
    return {
        "message_id": f"ly-{uuid.uuid4().hex}",
        "channel": "web",
        "type": "page.viewed",
        "occurred_at": T0 + timedelta(minutes=minute),
        "identifiers": identifiers,
    }


def profile_of(db: Database, message_id: str) -> str:
    with db.read() as session:
        record = get_event(session, WS, message_id)
        assert record is not None
        found = event_views(session, WS, [record])[0]["profile_id"]
    assert found
    return str(found)


def new_profile(db: Database) -> str:
    item = event({"user_id": f"u-{uuid.uuid4().hex[:10]}"})
    process(db, [item])
    return profile_of(db, item["message_id"])


def ledger_sum(db: Database, profile_id: str) -> int:
    with db.read() as session:
        total = session.scalar(
            select(func.coalesce(func.sum(LoyaltyEntry.points), 0)).where(
                LoyaltyEntry.workspace_id == WS, LoyaltyEntry.profile_id == profile_id
            )
        )
    return int(total or 0)


def test_award_is_idempotent_and_the_balance_is_the_ledger_sum(any_db: Database) -> None:
    profile = new_profile(any_db)
    with any_db.write() as session:
        first = award(
            session,
            WS,
            profile,
            120,
            reason="order",
            source="rule:r1@1",
            event_id=7,
            key="rule:r1:7",
            now=T0,
            config=CONFIG,
        )
    with any_db.write() as session:  # the batch is retried: the same key awards nothing
        again = award(
            session,
            WS,
            profile,
            120,
            reason="order",
            source="rule:r1@1",
            event_id=7,
            key="rule:r1:7",
            now=T0,
            config=CONFIG,
        )
    assert first.created and not again.created
    assert again.entry["id"] == first.entry["id"] and again.balance == 120
    with pytest.raises(IdempotencyConflict) as conflict, any_db.write() as session:
        award(session, WS, profile, 999, reason="x", source="api", key="rule:r1:7", now=T0)
    assert conflict.value.field == "idempotency_key"

    steps = [
        lambda s: award(s, WS, profile, 300, reason="welcome", source="api", now=T0),
        lambda s: deduct(s, WS, profile, 70, reason="gift", source="cli", now=T0),
        lambda s: adjust(s, WS, profile, -50, reason="mistake", source="cli", now=T0),
        lambda s: adjust(s, WS, profile, 25, reason="goodwill", source="api", now=T0),
        lambda s: redeem_reward(s, WS, profile, "coffee", source="api", now=T0, config=CONFIG),
    ]
    expected = [420, 350, 300, 325, 175]
    for step, want in zip(steps, expected, strict=True):
        with any_db.write() as session:
            posted = step(session)
        with any_db.read() as session:
            assert posted.balance == balance(session, WS, profile) == want
        assert ledger_sum(any_db, profile) == want
    with any_db.read() as session:
        entries, cursor = history(session, WS, profile, limit=4)
        rest, end = history(session, WS, profile, limit=4, before=cursor)
    assert [e["kind"] for e in entries + rest] == [
        "redeem",
        "adjust",
        "adjust",
        "redeem",
        "earn",
        "earn",
    ]
    assert entries[0]["reward_id"] == "coffee" and entries[0]["points"] == -150
    assert rest[-1]["event_id"] == 7 and rest[-1]["source"] == "rule:r1@1"
    assert rest[-1]["expires_at"] == "2026-07-10T12:00:00+00:00" and end is None


def test_insufficient_points_write_nothing_and_name_the_balance(any_db: Database) -> None:
    profile = new_profile(any_db)
    with any_db.write() as session:
        award(session, WS, profile, 100, reason="order", source="api", now=T0)
    with pytest.raises(InsufficientPoints) as short, any_db.write() as session:
        deduct(session, WS, profile, 101, reason="too much", source="api", now=T0)
    assert str(short.value) == "insufficient points: the balance is 100, 101 needed"
    assert (short.value.balance, short.value.needed, short.value.field) == (100, 101, "points")
    with pytest.raises(InsufficientPoints) as reward, any_db.write() as session:
        redeem_reward(session, WS, profile, "coffee", source="api", now=T0, config=CONFIG)
    assert reward.value.field == "reward" and reward.value.needed == 150
    with pytest.raises(InsufficientPoints), any_db.write() as session:
        adjust(session, WS, profile, -101, reason="no", source="api", now=T0)
    with pytest.raises(UnknownReward) as unknown, any_db.write() as session:
        redeem_reward(session, WS, profile, "yacht", source="api", now=T0, config=CONFIG)
    assert unknown.value.field == "reward"
    for bad in (0, -5, 2.5, True):
        with pytest.raises(ValidationError) as invalid, any_db.write() as session:
            award(session, WS, profile, bad, reason="x", source="api", now=T0)  # type: ignore[arg-type]
        assert invalid.value.field == "points"
    with pytest.raises(ValidationError) as empty, any_db.write() as session:
        award(session, WS, profile, 5, reason=" ", source="api", now=T0)
    assert empty.value.field == "reason"
    with pytest.raises(ProfileNotFound), any_db.write() as session:
        award(session, WS, "prof_nobody", 5, reason="x", source="api", now=T0)
    assert ledger_sum(any_db, profile) == 100


def test_expiry_is_fifo_idempotent_and_runs_before_any_debit(any_db: Database) -> None:
    profile = new_profile(any_db)
    with any_db.write() as session:
        award(session, WS, profile, 100, reason="jan", source="api", now=T0, config=CONFIG)
        award(
            session,
            WS,
            profile,
            200,
            reason="feb",
            source="api",
            now=T0 + timedelta(days=31),
            config=CONFIG,
        )
        # 150 spent in March: all of January's lot (oldest first) and 50 of February's
        deduct(
            session,
            WS,
            profile,
            150,
            reason="gift",
            source="api",
            now=T0 + timedelta(days=60),
            config=CONFIG,
        )
    july = datetime(2026, 7, 11, tzinfo=UTC)  # January's lot is due (10 July), not February's
    with any_db.write() as session:
        run = expire_due(session, WS, july, config=CONFIG)
    assert (run.entries, run.points) == (0, 0)  # January's lot was spent: nothing left of it
    with any_db.read() as session:
        assert balance(session, WS, profile) == 150
        account = session.get(LoyaltyAccount, (WS, profile))
        assert account is not None and account.next_expiry_at == datetime(
            2026, 8, 10, 12, 0, tzinfo=UTC
        )
    august = datetime(2026, 8, 10, 12, 0, tzinfo=UTC)
    with any_db.write() as session:
        run = expire_due(session, WS, august, config=CONFIG)
    assert (run.profiles, run.entries, run.points) == (1, 1, 150)
    with any_db.write() as session:  # again: nothing due any more
        assert expire_due(session, WS, august + timedelta(days=1), config=CONFIG).entries == 0
    with any_db.read() as session:
        assert balance(session, WS, profile) == 0 == ledger_sum(any_db, profile)
        [expired] = [e for e in history(session, WS, profile)[0] if e["kind"] == "expire"]
        account = session.get(LoyaltyAccount, (WS, profile))
        assert account is not None and account.next_expiry_at is None
    assert expired["points"] == -150 and expired["source"] == "expiry"

    # a debit never spends points past their date, even before the scheduler ran
    other = new_profile(any_db)
    with any_db.write() as session:
        award(session, WS, other, 100, reason="old", source="api", now=T0, config=CONFIG)
    with pytest.raises(InsufficientPoints) as short, any_db.write() as session:
        deduct(session, WS, other, 60, reason="x", source="api", now=july, config=CONFIG)
    assert short.value.balance == 0
    assert ledger_sum(any_db, other) == 100  # the refused debit's transaction rolled back
    with any_db.write() as session:  # any change expires the due lots first
        posted = award(session, WS, other, 50, reason="new", source="api", now=july, config=CONFIG)
    assert posted.expired == 100 and posted.balance == 50 == ledger_sum(any_db, other)


def test_tier_changes_are_fed_and_the_tier_is_queryable(any_db: Database) -> None:
    profile = new_profile(any_db)
    with any_db.read() as session:
        start = session.scalar(select(func.coalesce(func.max(ProfileChange.id), 0)))
    with any_db.write() as session:
        assert (
            award(session, WS, profile, 499, reason="a", source="api", now=T0, config=CONFIG).tier
            is None
        )
        up = award(session, WS, profile, 1, reason="b", source="rule:r9@2", now=T0, config=CONFIG)
    assert up.tier == "silver" and up.tier_change is not None
    with any_db.write() as session:  # spending does not lower a tier measured on earnings
        assert (
            deduct(
                session, WS, profile, 400, reason="c", source="api", now=T0, config=CONFIG
            ).tier_change
            is None
        )
        assert set_tier(session, WS, profile, "gold", source="cli", now=T0, config=CONFIG) == "gold"
    later = T0 + timedelta(days=400)  # earnings left the window: the floor keeps gold
    with any_db.write() as session:
        assert (
            award(session, WS, profile, 1, reason="d", source="api", now=later, config=CONFIG).tier
            == "gold"
        )
        assert set_tier(session, WS, profile, None, source="cli", now=later, config=CONFIG) is None
        with pytest.raises(ValidationError):
            set_tier(session, WS, profile, "platinum", source="cli", now=later, config=CONFIG)
    with any_db.read() as session:
        assert tier(session, WS, profile) is None
        feed = [
            c
            for c in changes_after(session, WS, int(start or 0), limit=1000)
            if c["profile_id"] == profile and c["type"] == "loyalty.tier_changed"
        ]
        view = summary(session, WS, profile, config=CONFIG, now=later)
    assert [(c["type"], c["data"]["from"], c["data"]["to"]) for c in feed] == [
        ("loyalty.tier_changed", None, "silver"),
        ("loyalty.tier_changed", "silver", "gold"),
        ("loyalty.tier_changed", "gold", None),
    ]
    assert feed[0]["data"]["source"] == "rule:r9@2" and feed[0]["data"]["direction"] == "up"
    assert feed[0]["data"]["value"] == 500 and feed[2]["data"]["direction"] == "down"
    # what was left of both earlier lots (99 and 1) expired (6 months) before the last award
    assert view["balance"] == 1 and view["tier_measure"]["value"] == 1
    assert [e["points"] for e in view["entries"][:3]] == [1, -1, -99]
    assert view["next_tier"] == {"name": "silver", "needs": 499}
    assert view["rewards"] == [
        {"id": "coffee", "name": "Free coffee", "points": 150, "available": False}
    ]


def test_spend_tiers_count_orders_in_the_window(any_db: Database) -> None:
    spend = LoyaltyConfig.from_mapping(
        {"tier_measure": "spend", "tiers": [{"name": "vip", "threshold": 100}]}
    )
    user = f"u-{uuid.uuid4().hex[:10]}"
    order = {**event({"user_id": user}), "type": "order.completed", "channel": "pos"}
    refund = {**event({"user_id": user}, 5), "type": "order.refunded", "channel": "pos"}
    process(any_db, [{**order, "properties": {"total": 80.5}}])
    profile = profile_of(any_db, order["message_id"])
    with any_db.write() as session:
        posted = award(
            session,
            WS,
            profile,
            10,
            reason="x",
            source="api",
            now=T0 + timedelta(hours=1),
            config=spend,
        )
    assert posted.tier is None
    process(
        any_db,
        [
            {
                **event({"user_id": user}, 2),
                "type": "order.completed",
                "channel": "pos",
                "properties": {"total": 30},
            }
        ],
    )
    with any_db.write() as session:
        posted = award(
            session,
            WS,
            profile,
            10,
            reason="y",
            source="api",
            now=T0 + timedelta(hours=1),
            config=spend,
        )
    assert posted.tier == "vip"
    process(any_db, [{**refund, "properties": {"total": 30}}])
    with any_db.read() as session:
        view = summary(session, WS, profile, config=spend, now=T0 + timedelta(hours=1))
    assert view["tier_measure"] == {"kind": "spend", "value": 80.5, "window_days": 365}


def test_a_merged_away_id_resolves_to_the_survivor_with_both_ledgers(any_db: Database) -> None:
    anon, user = f"a-{uuid.uuid4().hex[:10]}", f"u-{uuid.uuid4().hex[:10]}"
    first, second = event({"anonymous_id": anon}), event({"user_id": user}, 1)
    process(any_db, [first, second])
    old, kept = profile_of(any_db, first["message_id"]), profile_of(any_db, second["message_id"])
    assert old != kept
    with any_db.write() as session:
        award(session, WS, old, 100, reason="before login", source="api", now=T0)
        award(session, WS, kept, 40, reason="member", source="api", now=T0)
    login = event({"anonymous_id": anon, "user_id": user}, 2)
    process(any_db, [login])
    survivor = profile_of(any_db, login["message_id"])
    merged_away = old if survivor == kept else kept
    with any_db.read() as session:
        assert balance(session, WS, merged_away) == balance(session, WS, survivor) == 140
        view = summary(session, WS, merged_away)
    assert view["profile_id"] == survivor and view["requested_id"] == merged_away
    with any_db.write() as session:
        posted = deduct(session, WS, merged_away, 140, reason="all", source="api", now=T0)
    assert posted.entry["profile_id"] == survivor and posted.balance == 0


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_two_transactions_redeeming_the_last_points_only_one_wins(
    backend: str, request: pytest.FixtureRequest
) -> None:
    """The first holds its transaction open after its debit; the second must wait for the
    commit and then see the balance spent (without the lock it would read 100 and pass)."""
    url = request.getfixturevalue(f"{backend}_url")
    db = request.getfixturevalue(f"{backend}_db")
    other = Database.connect(url)  # its own engine: on SQLite, its own process-level lock
    try:
        profile = new_profile(db)
        with db.write() as session:
            award(session, WS, profile, 100, reason="order", source="api", now=T0)
        first_debited, outcome = threading.Event(), {}

        def first() -> None:
            with db.write() as session:
                deduct(session, WS, profile, 100, reason="one", source="api", now=T0)
                first_debited.set()
                time.sleep(0.8)  # the other transaction starts meanwhile

        def second() -> None:
            first_debited.wait(10)
            started = time.monotonic()
            try:
                with other.write() as session:
                    deduct(session, WS, profile, 100, reason="two", source="api", now=T0)
                outcome["second"] = "redeemed"
            except InsufficientPoints as exc:
                outcome["second"] = f"refused at {exc.balance}"
            outcome["waited"] = time.monotonic() - started

        threads = [threading.Thread(target=first), threading.Thread(target=second)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert outcome["second"] == "refused at 0"
        assert outcome["waited"] > 0.5  # it waited for the first to commit
        assert ledger_sum(db, profile) == 0
        with db.read() as session:
            kinds = [e["kind"] for e in history(session, WS, profile)[0]]
        assert kinds == ["redeem", "earn"]
    finally:
        other.dispose()


def test_the_scheduler_job_expires_every_workspace(any_db: Database, tmp_path: Any) -> None:
    from pipeline import load_settings
    from workers.celery_app import LOYALTY_EXPIRE, configure
    from workers.loyalty_tasks import expire_everywhere
    from workers.runtime import Runtime

    settings = load_settings({"ECRM_HOME": str(tmp_path)})
    beat = configure(settings).conf.beat_schedule["loyalty-expire"]
    assert (
        (beat["task"], beat["schedule"])
        == (LOYALTY_EXPIRE, 3600.0)
        == ("ecrm.loyalty.expire", 3600.0)
    )
    profile = new_profile(any_db)
    with any_db.write() as session:  # the default programme: points expire after 12 months
        award(session, WS, profile, 100, reason="order", source="api", now=T0)
    runtime = Runtime(settings=settings, db=any_db)
    run = expire_everywhere(runtime, now=datetime(2027, 1, 10, 12, 0, tzinfo=UTC))
    assert (run.entries, run.points) == (1, 100)
    assert expire_everywhere(runtime, now=datetime(2027, 2, 1, tzinfo=UTC)).entries == 0
    assert ledger_sum(any_db, profile) == 0
