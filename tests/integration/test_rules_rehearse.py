"""``ecrm rules test``'s engine: the log replayed against rules, nothing written."""

from __future__ import annotations

import uuid
from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session
from test_rule_firing import POINTS, T0, THIRD, WELCOME, WS, apply, email, order, rule, run

from identity.models import ProfileChange, ProfileIdentifier
from personalization import loyalty
from personalization.actions import Action
from personalization.labels import ProfileLabel
from personalization.loyalty import LoyaltyAccount, LoyaltyEntry
from personalization.rules import check_rule_set
from personalization.rules.models import RuleFiring
from personalization.rules.rehearse import rehearse
from pipeline import Database

TABLES = (RuleFiring, Action, LoyaltyEntry, LoyaltyAccount, ProfileLabel, ProfileChange)


def profile_of(session: Session, address: str) -> str:
    found = session.scalar(
        select(ProfileIdentifier.profile_id).where(
            ProfileIdentifier.kind == "email", ProfileIdentifier.value == address
        )
    )
    assert found is not None
    return found


def counts(db: Database) -> dict[str, int]:
    with db.read() as session:
        return {
            t.__tablename__: int(session.scalar(select(func.count()).select_from(t)) or 0)
            for t in TABLES
        }


def test_rehearsal_counts_what_rules_would_do_and_writes_nothing(any_db: Database) -> None:
    people = [f"re{n}-{uuid.uuid4().hex[:6]}@example.com" for n in range(4)]
    batches = [[order(p, day, 10 * (day + 1)) for p in people] for day in range(3)]
    run(any_db, *batches)  # processed with no rules: the log and the profiles exist
    apply(any_db, POINTS)  # a live rule: the rehearsal ignores the stored set
    run(any_db, [order(people[0], 5, 1)])
    with any_db.write() as session:
        profile = profile_of(session, people[1])
        loyalty.award(session, WS, profile, 12, reason="goodwill", source="test")
    before = counts(any_db)
    candidate = check_rule_set(
        {
            "rules": [
                WELCOME,
                THIRD,
                rule("spend", [{"type": "deduct_points", "points": 5}], priority=50),
                rule("promo", [email("Promo")], guards={"holdout": 50}, priority=10),
            ]
        }
    ).rules
    with any_db.read() as session:
        report = rehearse(session, WS, candidate, since=T0 - timedelta(days=1), sample=2)
    assert counts(any_db) == before
    view = {r["rule_id"]: r for r in report.view()["rules"]}
    assert report.events == 13
    assert view["welcome"]["fired"] == 4 and view["welcome"]["profiles"] == 4
    assert view["welcome"]["messages"] == {"queued": 4}
    assert [m["subject"] for m in view["welcome"]["sample_messages"]] == ["Welcome, Ann!"] * 2
    assert view["third-order"]["fired"] == 4  # the third order in 30 days, per person
    assert view["third-order"]["actions"] == {"add_tag:added": 4, "send_email:queued": 4}
    # debits against the balance held, lowered in memory: people[1] has 12 points, so two
    # of their three orders can take 5; people[0] has 1 point (one order after POINTS)
    assert view["spend"]["actions"] == {"deduct_points:deducted": 2, "deduct_points:failed": 11}
    assert view["spend"]["points_deducted"] == 10
    promo = view["promo"]
    assert promo["fired"] + sum(promo["held"].values()) == 13
    assert set(promo["held"]) <= {"holdout"}
    assert len(view["welcome"]["sample_profiles"]) == 2
