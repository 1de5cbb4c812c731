"""Rules on SQLite and PostgreSQL: versioned, atomic applies; history aggregates as of an event."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import ingest_and_process
from sqlalchemy import func, select

from identity.views import event_views
from personalization.rules import (
    Context,
    HistoryAggregate,
    RuleIndex,
    RuleSetInvalid,
    RuleVersion,
    aggregates_of,
    apply_rule_set,
    check_rule_set,
    evaluate,
    get_rule,
    history_value,
    history_values,
    list_rules,
    load_file,
    load_rules,
    parse_field,
)
from pipeline import Database, ValidationError
from pipeline.events import get_event

SAMPLE = Path(__file__).parents[2] / "personalization" / "rules" / "samples" / "demo.yaml"
T = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def rule(rule_id: str, **overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": rule_id,
        "name": f"rule {rule_id}",
        "trigger": {"types": ["order.completed"]},
        "actions": [{"type": "add_tag", "tag": rule_id}],
    }
    base.update(overrides)
    return base


def apply(db: Database, *rules: dict[str, Any], source: str = "test") -> Any:
    with db.write() as session:
        return apply_rule_set(
            session, "default", check_rule_set({"rules": list(rules)}), source=source
        )


def versions(db: Database) -> int:
    with db.read() as session:
        return int(session.scalar(select(func.count()).select_from(RuleVersion)) or 0)


def test_every_change_is_a_version_and_a_removed_rule_is_disabled(any_db: Database) -> None:
    first = apply(any_db, rule("a"), rule("b", priority=200))
    assert (first.created, first.updated, first.disabled) == ({"a": 1, "b": 1}, {}, {})

    again = apply(any_db, rule("a"), rule("b", priority=200))
    assert not again.changed and again.unchanged == {"a": 1, "b": 1}
    assert versions(any_db) == 2  # no version for what did not change

    changed = apply(any_db, rule("a", name="renamed"), rule("b", priority=200))
    assert changed.updated == {"a": 2} and changed.unchanged == {"b": 1}

    removed = apply(any_db, rule("b", priority=200))  # a left the file
    assert removed.disabled == {"a": 3}
    with any_db.read() as session:
        a = get_rule(session, "default", "a")
        listed = list_rules(session, "default")
    assert a is not None
    assert (a["version"], a["enabled"], a["name"]) == (3, False, "renamed")
    assert [(v["version"], v["change"], v["enabled"]) for v in a["versions"]] == [
        (3, "removed", False),
        (2, "updated", True),
        (1, "created", True),
    ]
    assert a["versions"][0]["definition"]["enabled"] is False
    assert a["versions"][2]["definition"]["name"] == "rule a"
    assert [(r["id"], r["enabled"]) for r in listed] == [("b", True), ("a", False)]  # priority

    still_gone = apply(any_db, rule("b", priority=200))
    assert not still_gone.changed and still_gone.unchanged == {"a": 3, "b": 1}

    back = apply(any_db, rule("a", name="renamed"), rule("b", priority=200))
    assert back.updated == {"a": 4}
    with any_db.read() as session:
        loaded = {r.id: r for r in load_rules(session, "default")}
    assert set(loaded) == {"a", "b"}
    assert loaded["a"].version == 4 and loaded["a"].origin == "rule:a@4"


def test_an_apply_is_all_or_nothing(any_db: Database, tmp_path: Path) -> None:
    apply(any_db, rule("keep"))
    before = versions(any_db)
    # one bad rule among good ones: nothing is written (the set is checked first)
    path = tmp_path / "rules.yaml"
    path.write_text(
        "rules:\n"
        "  - {id: new-one, name: n, trigger: {types: [a.b]}, actions: [{type: add_tag, tag: x}]}\n"
        "  - {id: bad, name: n, trigger: {types: [a.b]}, actions: [{type: explode}]}\n"
    )
    with pytest.raises(RuleSetInvalid):
        load_file(path)
    # a failure after the writes, in the same transaction, leaves the old set
    with pytest.raises(RuntimeError), any_db.write() as session:
        result = apply_rule_set(
            session, "default", check_rule_set({"rules": [rule("new-one")]}), source="t"
        )
        assert result.created == {"new-one": 1} and result.disabled == {"keep": 2}
        raise RuntimeError("crash before commit")
    assert versions(any_db) == before
    with any_db.read() as session:
        assert [(r["id"], r["version"], r["enabled"]) for r in list_rules(session, "default")] == [
            ("keep", 1, True)
        ]


def test_an_unknown_workspace_is_refused(any_db: Database) -> None:
    with pytest.raises(ValidationError) as caught, any_db.write() as session:
        apply_rule_set(session, "nope", check_rule_set({"rules": [rule("a")]}), source="t")
    assert caught.value.field == "workspace"


def test_the_sample_rule_set_applies(any_db: Database) -> None:
    with any_db.write() as session:
        result = apply_rule_set(session, "default", load_file(SAMPLE), source=str(SAMPLE))
    assert len(result.created) == 5
    with any_db.read() as session:
        loaded = load_rules(session, "default")
    assert {r.id for r in loaded} == set(result.created)
    assert all(r.version == 1 for r in loaded)


# history aggregates


def store_and_process(db: Database, items: list[dict[str, Any]]) -> None:
    ingest_and_process(db, items, batch_size=50)


def touch(
    user: str, kind: str, days: float, channel: str = "web", **properties: Any
) -> dict[str, Any]:
    return {
        "message_id": f"h-{uuid.uuid4().hex}",
        "channel": channel,
        "type": kind,
        "occurred_at": T + timedelta(days=days),
        "identifiers": {"user_id": user},
        "properties": properties,
    }


def agg(text: str) -> HistoryAggregate:
    found = parse_field(text).aggregate
    assert found is not None
    return found


def test_history_aggregates_see_the_profile_as_of_the_event(any_db: Database) -> None:
    user, other = f"u-{uuid.uuid4().hex[:8]}", f"o-{uuid.uuid4().hex[:8]}"
    items = [
        touch(user, "page.viewed", -70),
        touch(user, "order.completed", -40, "pos", total=100),
        touch(user, "order.completed", -20, "web", total=50.5),
        touch(user, "order.completed", -5, "web", total="n/a"),  # not a number: not summed
        touch(user, "order.refunded", -3, "pos", total=20),
        touch(user, "page.viewed", -1),
        touch(user, "order.completed", 1, "web", total=1000),  # after as_of: unseen
        touch(other, "order.completed", -2, "web", total=7),  # someone else's
    ]
    store_and_process(any_db, items)
    with any_db.read() as session:
        last_visit = get_event(session, "default", items[5]["message_id"])
        assert last_visit is not None
        profile = event_views(session, "default", [last_visit])[0]["profile_id"]

        def value(text: str, as_of: datetime = T, **kw: Any) -> Any:
            return history_value(session, "default", profile, agg(text), as_of, **kw)

        assert value("history.count(type=order.completed)") == 3
        assert value("history.count(type=order.completed, window=30d)") == 2
        assert value("history.count(type=order.*)") == 4
        assert value("history.count(type=*)") == value("history.count()") == 6
        assert value("history.count(channel=pos)") == 2
        assert value("history.count(type=order.completed, channel=web, window=4w)") == 2
        assert value("history.sum(property=total, type=order.completed)") == 150.5
        assert value("history.sum(property=total, window=90d)") == 170.5
        assert value("history.sum(property=missing)") == 0
        assert value("history.days_since(type=page.viewed)") == pytest.approx(1.0)
        # at the visit itself, days_since looks at the previous visit
        assert value(
            "history.days_since(type=page.viewed)",
            T - timedelta(days=1),
            current_event_id=last_visit.event.id,
        ) == pytest.approx(69.0)
        assert value("history.days_since(type=email.received)") is None
        assert value("history.days_since(type=order.completed, window=1d)") is None
        # a late backfill of something 30 days ago sees the history of 30 days ago
        assert value("history.count(type=order.completed)", T - timedelta(days=30)) == 1
        assert value("history.count(type=order.completed)", T + timedelta(days=1)) == 4
        with pytest.raises(ValidationError):
            value("history.count()", datetime(2026, 6, 1))  # naive: refused

        # end to end: index -> aggregates the rule needs -> context -> evaluation
        rules = check_rule_set(
            {
                "rules": [
                    rule(
                        "third-order",
                        conditions={
                            "all": [
                                {
                                    "field": "history.count(type=order.completed, window=60d)",
                                    "op": "gte",
                                    "value": 3,
                                },
                                {
                                    "field": "history.sum(property=total, window=60d)",
                                    "op": "gt",
                                    "value": 150,
                                },
                            ]
                        },
                    )
                ]
            }
        ).rules
        [candidate] = RuleIndex(rules).candidates("order.completed", "web")
        needed = aggregates_of(candidate.conditions)
        as_of = T - timedelta(days=5)
        history = history_values(session, "default", profile, needed, as_of)
        outcome = evaluate(
            candidate.conditions, Context(event={"type": "order.completed"}, history=history)
        )
        assert outcome.matched, outcome.view()
        assert [leaf.seen for leaf in outcome.trace] == [3, 150.5]
        earlier = history_values(session, "default", profile, needed, T - timedelta(days=20))
        assert not evaluate(candidate.conditions, Context(event={}, history=earlier)).matched
