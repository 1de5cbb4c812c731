"""What processing writes to the profile change feed, on real SQLite and PostgreSQL.

Downstream webhooks deliver exactly this feed, so each type an endpoint can subscribe to
must be written by the code that makes the change: ``profile.created``/``updated``/
``merged`` by identity resolution, ``loyalty.points_changed`` by the ledger and by a
batch's earns, ``rule.fired`` by rule firing, ``message.sent``/``failed`` by delivery.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from conftest import ingest_and_process
from sqlalchemy import func, select

from identity.changes import changes_after
from identity.config import IdentityConfig
from identity.models import Profile, ProfileChange
from identity.unmerge import unmerge
from identity.views import find_profile_id
from personalization import actions
from personalization.loyalty import award, deduct
from personalization.rules import apply_rule_set, check_rule_set
from pipeline import Database

WS = "default"
T0 = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
IDENTITY_TYPES = ("profile.created", "profile.updated", "profile.merged")


def ev(
    minute: int,
    traits: dict[str, Any] | None = None,
    type_: str = "page.viewed",
    properties: dict[str, Any] | None = None,
    **ids: str,
) -> dict[str, Any]:
    return {
        "message_id": f"cft-{uuid.uuid4().hex}",
        "channel": "web",
        "type": type_,
        "occurred_at": T0 + timedelta(minutes=minute),
        "identifiers": ids,
        "traits": traits or {},
        "properties": properties or {},
    }


def run(db: Database, *batches: list[dict[str, Any]]) -> None:
    ingest_and_process(db, *batches)


def mark(db: Database) -> int:
    with db.read() as session:
        return int(session.scalar(select(func.coalesce(func.max(ProfileChange.id), 0))) or 0)


def feed(db: Database, since: int, types: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    with db.read() as session:
        found = changes_after(session, WS, since, limit=10_000)
    return [c for c in found if not types or c["type"] in types]


def owner(db: Database, kind: str, value: str) -> str:
    with db.read() as session:
        found = find_profile_id(session, WS, kind, value, "US")
    assert found is not None
    return found


def test_identity_announces_creations_real_updates_and_merges(any_db: Database) -> None:
    anon, email, other = uuid.uuid4().hex, f"{uuid.uuid4().hex[:8]}@example.com", uuid.uuid4().hex
    start = mark(any_db)
    run(any_db, [ev(0, anonymous_id=anon)])
    visitor = owner(any_db, "anonymous_id", anon)
    assert [(c["type"], c["profile_id"]) for c in feed(any_db, start)] == [
        ("profile.created", visitor)
    ]

    step = mark(any_db)  # activity alone (a second page view) changes nothing subscribers keep
    run(any_db, [ev(1, anonymous_id=anon)])
    assert feed(any_db, step) == []

    step = mark(any_db)  # an identify: a new identifier and a trait
    run(any_db, [ev(2, {"first_name": "Ann"}, anonymous_id=anon, email=email)])
    [updated] = feed(any_db, step)
    assert (updated["type"], updated["profile_id"]) == ("profile.updated", visitor)
    assert updated["data"] == {"changed": ["traits.first_name", "identifiers.email"]}

    step = mark(any_db)  # the same trait value again: no change
    run(any_db, [ev(3, {"first_name": "Ann"}, email=email)])
    assert feed(any_db, step) == []

    step = mark(any_db)  # a second visitor, then one event naming both: a merge
    run(any_db, [ev(4, anonymous_id=other)], [ev(5, anonymous_id=other, email=email)])
    second = feed(any_db, step)
    assert [c["type"] for c in second] == ["profile.created", "profile.merged"]
    merged_id = second[0]["profile_id"]
    merged = second[1]
    assert merged["profile_id"] == visitor  # the older profile survives
    assert merged["data"]["survivor_id"] == visitor and merged["data"]["merged_id"] == merged_id
    assert merged["data"]["rule"] == "shared_identifier"
    with any_db.read() as session:
        assert session.get(Profile, merged_id).merged_into == visitor  # type: ignore[union-attr]


def test_profiles_born_and_merged_in_one_batch_are_announced_once(any_db: Database) -> None:
    anon, email = uuid.uuid4().hex, f"{uuid.uuid4().hex[:8]}@example.com"
    start = mark(any_db)
    run(
        any_db,
        [ev(0, anonymous_id=anon), ev(1, email=email), ev(2, anonymous_id=anon, email=email)],
    )
    survivor = owner(any_db, "email", email)
    assert owner(any_db, "anonymous_id", anon) == survivor
    assert [(c["type"], c["profile_id"]) for c in feed(any_db, start)] == [
        ("profile.created", survivor)
    ]


def test_an_unmerge_announces_itself_then_each_part_state(any_db: Database) -> None:
    first, second = f"{uuid.uuid4().hex[:8]}@example.com", f"{uuid.uuid4().hex[:8]}@example.com"
    phone = f"+1415555{uuid.uuid4().int % 10_000:04d}"
    run(any_db, [ev(0, email=first)], [ev(1, email=second)], [ev(2, email=first, phone=phone)])
    run(any_db, [ev(3, email=second, phone=phone)])
    survivor = owner(any_db, "email", first)
    assert owner(any_db, "email", second) == survivor
    step = mark(any_db)
    with any_db.write() as session:
        result = unmerge(
            session, WS, survivor, identifier=("phone", phone), config=IdentityConfig()
        )
    after = feed(any_db, step)
    assert after[0]["type"] == "profile.unmerged" and after[0]["profile_id"] == survivor
    parts = {part["id"] for part in result["profiles"]}
    assert len(parts) >= 2
    assert [c["type"] for c in after[1:]] == ["profile.updated"] * len(parts)
    assert {c["profile_id"] for c in after[1:]} == parts  # nothing from the replay itself


def test_the_ledger_announces_each_entry_with_the_balance_it_leaves(any_db: Database) -> None:
    email = f"{uuid.uuid4().hex[:8]}@example.com"
    run(any_db, [ev(0, email=email)])
    profile = owner(any_db, "email", email)
    step = mark(any_db)
    with any_db.write() as session:
        earned = award(session, WS, profile, 120, reason="welcome", source="api", now=T0)
        deduct(session, WS, profile, 20, reason="fix", source="cli", now=T0)
    points = feed(any_db, step, ("loyalty.points_changed",))
    assert [(c["profile_id"], c["data"]["kind"], c["data"]["points"]) for c in points] == [
        (profile, "earn", 120),
        (profile, "redeem", -20),
    ]
    assert [c["data"]["balance"] for c in points] == [120, 100]
    assert points[0]["data"]["entry_id"] == earned.entry["id"]
    assert (points[0]["data"]["reason"], points[0]["data"]["source"]) == ("welcome", "api")


def test_a_batch_of_rule_firings_announces_points_then_tiers_then_each_firing(
    any_db: Database,
) -> None:
    # default programme: silver from 500 points
    points_rule = {
        "id": "cft-points",
        "name": "a point per unit spent",
        "trigger": {"types": ["order.completed"]},
        "actions": [{"type": "award_points", "per_property": "total", "reason": "order"}],
    }
    with any_db.write() as session:
        apply_rule_set(session, WS, check_rule_set({"rules": [points_rule]}), source="test")
    email = f"{uuid.uuid4().hex[:8]}@example.com"
    step = mark(any_db)
    order = {"type_": "order.completed", "email": email}
    run(
        any_db,
        [ev(0, properties={"total": 300}, **order), ev(1, properties={"total": 250}, **order)],
    )
    profile = owner(any_db, "email", email)
    mine = [c for c in feed(any_db, step) if c["profile_id"] == profile]
    kinds = [c["type"] for c in mine if not c["type"].startswith("profile.")]
    assert kinds == [  # a firing reports its actions' final outcomes: after their effects
        "loyalty.points_changed",
        "loyalty.points_changed",
        "loyalty.tier_changed",
        "rule.fired",
        "rule.fired",
    ]
    fired = [c["data"] for c in mine if c["type"] == "rule.fired"]
    assert {f["rule_id"] for f in fired} == {"cft-points"}
    assert [f["outcomes"][0]["status"] for f in fired] == ["awarded", "awarded"]
    assert all(f["event_type"] == "order.completed" for f in fired)
    balances = [c["data"]["balance"] for c in mine if c["type"] == "loyalty.points_changed"]
    assert balances == [300, 550]
    with any_db.write() as session:  # drop the rule: other tests' orders earn nothing
        apply_rule_set(session, WS, check_rule_set({"rules": []}), source="test")


def test_a_message_reaching_its_end_is_announced_without_its_text(any_db: Database) -> None:
    email = f"{uuid.uuid4().hex[:8]}@example.com"
    run(any_db, [ev(0, email=email)])
    profile = owner(any_db, "email", email)

    def queued(text: str) -> str:
        with any_db.write() as session:
            new = actions.NewAction(
                kind=actions.EMAIL_SEND,
                recipient=email,
                payload={"subject": "Hi", "text": text},
                profile_id=profile,
            )
            return actions.enqueue(session, WS, new).action.id

    sent, failed, exhausted = queued("one"), queued("two"), queued("three")
    step = mark(any_db)
    with any_db.write() as session:
        for action_id in (sent, failed, exhausted):
            claimed = actions.claim(session, action_id, lease_seconds=60)
            assert claimed is not None
            if action_id == sent:
                actions.mark_sent(session, claimed, "<msg@hub>")
            elif action_id == failed:
                actions.mark_failed(session, claimed, "550 mailbox unknown")
            else:
                claimed.attempts = actions.MAX_ATTEMPTS
                assert actions.record_transient(session, claimed, "timeout") == actions.FAILED
    messages = feed(any_db, step, ("message.sent", "message.failed"))
    assert [(c["type"], c["data"]["action_id"]) for c in messages] == [
        ("message.sent", sent),
        ("message.failed", failed),
        ("message.failed", exhausted),
    ]
    assert all(c["profile_id"] == profile for c in messages)
    assert messages[0]["data"]["provider_id"] == "<msg@hub>"
    assert messages[1]["data"]["error"] == "550 mailbox unknown"
    assert "gave up" in messages[2]["data"]["error"]
    assert all("text" not in c["data"] and email not in str(c["data"]) for c in messages)
