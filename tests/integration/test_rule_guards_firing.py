"""Guards, labels, traces and custom events while rules fire (SQLite and PostgreSQL)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select
from test_rule_firing import WS, apply, email, event_id, firings, order, rule, run, stored

from identity.changes import changes_after
from personalization.actions import Action
from personalization.labels import labels_of_profile
from personalization.rules.fire import fire_rules, firings_of_events
from personalization.rules.guards import in_holdout
from pipeline import Database
from pipeline.caps import Cap


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}@example.com"


def queued(db: Database) -> list[Action]:
    with db.read() as session:
        return list(session.scalars(select(Action).order_by(Action.created_at)))


def test_holdout_profiles_are_recorded_without_actions(any_db: Database) -> None:
    apply(any_db, rule("promo", [email("Promo")], guards={"holdout": 50}))
    run(any_db, [order(unique(f"h{n}"), 0, 10) for n in range(24)])
    rows = firings(any_db, "promo")
    assert len(rows) == 24
    held = [f for f in rows if f.held == "holdout"]
    assert 0 < len(held) < 24  # 50% of 24 profiles: some of each (stable, so no flake)
    for firing in rows:
        assert (firing.held == "holdout") == in_holdout("promo", str(firing.profile_id), 50)
    assert all(o["status"] == "held" for f in held for o in f.outcomes)
    assert len(queued(any_db)) == 24 - len(held)


def test_frequency_cap_within_a_batch_and_across_batches(any_db: Database) -> None:
    address = unique("cap")
    apply(any_db, rule("weekly", [email("Hi")], guards={"frequency": {"max": 1, "per": "7d"}}))
    run(any_db, [order(address, 0, 10), order(address, 1, 10)], [order(address, 2, 10)])
    rows = firings(any_db, "weekly")
    assert [f.held for f in rows] == [None, "frequency_cap", "frequency_cap"]
    assert rows[1].outcomes == [{"type": "send_email", "status": "held", "reason": "frequency_cap"}]
    assert len(queued(any_db)) == 1


def test_channel_cap_counts_every_rule(any_db: Database) -> None:
    address = unique("chan")
    item = order(address, 0, 10)
    run(any_db, [item])  # processed before the rules exist
    apply(
        any_db,
        rule("first", [email("One")], priority=200),
        rule("second", [email("Two")], priority=100),
        rule("points", [{"type": "award_points", "points": 5}]),
    )
    caps = {"email": Cap(1, timedelta(days=7))}
    with any_db.write() as session:
        stats = fire_rules(session, WS, stored(any_db, [item]), channel_caps=caps)
    assert stats.fired == 2 and stats.held == 1
    by_rule = {f.rule_id: f for f in firings(any_db)}
    assert by_rule["first"].held is None and by_rule["second"].held == "channel_cap"
    assert by_rule["points"].held is None  # no message: the email cap does not apply
    assert [a.payload["subject"] for a in queued(any_db)] == ["One"]


def test_quiet_hours_delay_the_message(any_db: Database) -> None:
    address = unique("quiet")
    item = order(address, 0, 10)
    item["traits"] = {"timezone": "Europe/Berlin"}
    run(any_db, [item])
    apply(
        any_db,
        rule(
            "late",
            [email("Evening")],
            guards={"quiet_hours": {"start": "21:00", "end": "08:00", "timezone": "UTC"}},
        ),
    )
    now = datetime(2026, 11, 20, 22, 30, tzinfo=UTC)  # 23:30 in Berlin
    with any_db.write() as session:
        fire_rules(session, WS, stored(any_db, [item]), now=now)
    [action] = queued(any_db)
    assert action.due_at == datetime(2026, 11, 21, 7, 0, tzinfo=UTC)  # 08:00 in Berlin
    [firing] = firings(any_db, "late")
    assert firing.outcomes[0]["due_at"] == "2026-11-21T07:00:00+00:00"


def test_no_message_to_an_address_that_opted_out(any_db: Database) -> None:
    address = unique("out")
    opt_out = order(address, 0, 0)
    opt_out["type"] = "email.unsubscribed"
    opt_out["properties"] = {"consent": {"channel": "email", "status": "opted_out"}}
    apply(any_db, rule("offer", [email("Offer"), {"type": "award_points", "points": 3}]))
    run(any_db, [opt_out], [order(address, 1, 10)])
    [firing] = firings(any_db, "offer")
    assert firing.outcomes[0]["status"] == "suppressed"
    assert firing.outcomes[0]["reason"] == "no email consent"
    assert firing.outcomes[1]["status"] == "awarded"
    assert queued(any_db) == []


def test_near_misses_are_traced_when_asked(any_db: Database) -> None:
    address = unique("near")
    big = {"all": [{"field": "event.properties.total", "op": "gt", "value": 100}]}
    apply(
        any_db,
        rule("big", [{"type": "add_tag", "tag": "big"}], conditions=big, trace=True),
        rule("quiet-big", [{"type": "add_tag", "tag": "x"}], conditions=big),
    )
    small, large = order(address, 0, 50), order(address, 1, 500)
    run(any_db, [small], [large])
    rows = firings(any_db, "big")
    assert [f.matched for f in rows] == [False, True]
    assert rows[0].trace[0]["seen"] == 50 and rows[0].outcomes == []
    assert [f.matched for f in firings(any_db, "quiet-big")] == [True]
    with any_db.read() as session:  # as the profile's timeline shows them
        shown = firings_of_events(session, WS, [rows[0].event_id, rows[1].event_id])
    assert [(f["rule_id"], f["matched"]) for f in shown[rows[0].event_id]] == [("big", False)]
    assert {f["rule_id"] for f in shown[rows[1].event_id]} == {"big", "quiet-big"}
    with any_db.write() as session:  # a replay writes no second near miss
        stats = fire_rules(session, WS, stored(any_db, [small, large]))
    assert stats.near_misses == 0 and stats.already_fired == 2
    assert len(firings(any_db, "big")) == 2


def test_tags_segments_traits_and_custom_events(any_db: Database) -> None:
    address = unique("lab")
    apply(
        any_db,
        rule(
            "label",
            [
                {"type": "add_tag", "tag": "buyer"},
                {"type": "enter_segment", "segment": "new-customers"},
                {"type": "set_trait", "name": "segment_hint", "value": "warm"},
                {"type": "emit_webhook", "event": "buyer_seen", "data": {"why": "order"}},
            ],
            priority=200,
            conditions={"not": {"field": "profile.tags", "op": "contains", "value": "buyer"}},
        ),
        rule(
            "greet",
            [email("Hi", "You are {{ profile.traits.segment_hint }}")],
            conditions={"all": [{"field": "profile.tags", "op": "contains", "value": "buyer"}]},
        ),
    )
    run(any_db, [order(address, 0, 10)], [order(address, 1, 10), order(address, 2, 10)])
    [labelled] = firings(any_db, "label")  # tagged at the first order: never again
    assert [o["status"] for o in labelled.outcomes] == ["added", "added", "set", "emitted"]
    greets = firings(any_db, "greet")
    assert len(greets) == 2
    assert [a.payload["text"] for a in queued(any_db)] == ["You are warm", "You are warm"]
    with any_db.read() as session:
        labels = labels_of_profile(session, WS, str(labelled.profile_id))
        feed = [c["type"] for c in changes_after(session, WS, 0, limit=100)]
    assert labels.tags == ("buyer",) and labels.segments == ("new-customers",)
    assert labels.traits == {"segment_hint": "warm"}
    assert "custom.buyer_seen" in feed and "profile.tag_added" in feed


def test_a_tier_crossed_by_an_orders_points_fires_tier_rules_once(any_db: Database) -> None:
    # default programme: silver from 500 points, gold from 2000
    address = unique("tier")
    apply(
        any_db,
        rule("points", [{"type": "award_points", "per_property": "total"}], priority=200),
        {
            "id": "upgrade",
            "name": "upgrade",
            "trigger": {"types": ["loyalty.tier_changed"]},
            "conditions": {"all": [{"field": "event.properties.from", "op": "exists"}]},
            "actions": [email("You are now {{ loyalty.tier }}", "{{ loyalty.balance }} points")],
        },
    )
    small, silver, same, gold = (order(address, d, t) for d, t in enumerate((100, 450, 30, 1500)))
    items = [small, silver, same, gold]
    run(any_db, [small, silver], [same, gold])
    upgrades = firings(any_db, "upgrade")
    assert [f.event_id for f in upgrades] == [event_id(any_db, gold)]  # none -> silver: no from
    assert upgrades[0].trace[0]["seen"] == "silver"
    [sent] = queued(any_db)
    assert (sent.payload["subject"], sent.payload["text"]) == ("You are now gold", "2080 points")
    with any_db.read() as session:
        feed = [
            c["data"]["to"]
            for c in changes_after(session, WS, 0, limit=100)
            if c["type"] == "loyalty.tier_changed"
        ]
    assert feed == ["silver", "gold"]
    with any_db.write() as session:  # a replay: nothing fires twice
        stats = fire_rules(session, WS, stored(any_db, items))
    assert stats.fired == 0 and len(firings(any_db, "upgrade")) == 1


def test_a_template_cannot_change_what_later_rules_see(any_db: Database) -> None:
    address = unique("mut")
    sneaky = "{{ profile.traits.update({'first_name': 'Eve'}) }}x"
    apply(
        any_db,
        rule("sneaky", [email("Hi", sneaky)], priority=200),
        rule("greet", [email("Hello {{ profile.traits.first_name }}", "hi")], priority=100),
    )
    run(any_db, [order(address, 0, 10)])
    by_rule = {f.rule_id: f for f in firings(any_db)}
    assert by_rule["sneaky"].outcomes[0]["status"] == "failed"
    assert "SecurityError" in by_rule["sneaky"].outcomes[0]["error"]
    assert [a.payload["subject"] for a in queued(any_db)] == ["Hello Ann"]


def test_set_tier_and_debits_go_through_the_ledger(any_db: Database) -> None:
    address = unique("vip")
    gold = {"all": [{"field": "loyalty.tier", "op": "eq", "value": "gold"}]}
    apply(
        any_db,
        rule("earn", [{"type": "award_points", "per_property": "total"}], priority=300),
        rule("vip", [{"type": "set_tier", "tier": "gold"}], priority=200),
        rule("spend", [{"type": "deduct_points", "points": 30}], priority=100),
        rule("gold-only", [email("Gold", "{{ loyalty.balance }}")], priority=50, conditions=gold),
    )
    run(any_db, [order(address, 0, 20), order(address, 1, 20)])
    by_rule: dict[str, list[Any]] = {}
    for firing in firings(any_db):
        by_rule.setdefault(firing.rule_id, []).append(firing.outcomes[0])
    assert [o["status"] for o in by_rule["vip"]] == ["tier_set", "tier_set"]
    # 20 earned, 30 asked: refused; then 20 more (40): 30 taken, 10 left
    assert [o["status"] for o in by_rule["spend"]] == ["failed", "deducted"]
    assert "InsufficientPoints" in by_rule["spend"][0]["error"]
    assert by_rule["spend"][1]["balance"] == 10
    # the second order's context sees the tier the first one's rule set
    assert [o["status"] for o in by_rule["gold-only"]] == ["queued"]
    [sent] = queued(any_db)
    assert sent.payload["text"] == "20"  # as before this event's own actions (earn, debit)
