"""Probabilistic matching on real SQLite and PostgreSQL: typos join, namesakes stay apart,
the uncertain middle waits for a person, and limits still hold."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from conftest import ingest_and_process
from sqlalchemy import select

from identity.config import IdentityConfig
from identity.explain import explain
from identity.models import IdentityReview, ProfileMerge
from identity.reviews import decide, list_reviews
from identity.views import event_views
from pipeline import Database, ingest
from pipeline.events import get_event
from pipeline.outbox import relay
from workers.processing import process_batches

T0 = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
WS = "default"


def person(**overrides: str) -> dict[str, str]:
    """A shop's enrolment form; a unique postcode and number keep tests apart."""
    base = {
        "given_name": "Margaret",
        "surname": "Whitfield",
        "date_of_birth": "1984-03-17",
        "street_number": "42",
        "address_1": "Wattle Grove",
        "suburb": "Ashfield",
        "postcode": str(uuid.uuid4().int % 9000 + 1000),
        "state": "nsw",
    }
    base.update(overrides)
    return base


def record(traits: dict[str, str], minute: int = 0, **ids: str) -> dict[str, Any]:
    token = uuid.uuid4().hex
    return {
        "message_id": f"match-{token}",
        "channel": "pos",
        "type": "customer.enrolled",
        "occurred_at": T0 + timedelta(minutes=minute),
        "identifiers": ids or {"anonymous_id": f"anon-{token}"},
        "traits": traits,
    }


def run(db: Database, *items: dict[str, Any], config: IdentityConfig | None = None) -> None:
    """Each record in a batch of its own, processed before the next arrives."""
    ingest_and_process(db, *([item] for item in items), config=config)


def profile_of(db: Database, item: dict[str, Any]) -> str:
    with db.read() as session:
        found = get_event(session, WS, item["message_id"])
        assert found is not None and found.status == "processed", found
        profile = event_views(session, WS, [found])[0]["profile_id"]
    assert profile
    return str(profile)


def test_typos_join_and_the_merge_is_explained(any_db: Database) -> None:
    first = person()
    typo = {
        **first,
        "given_name": "Margret",
        "address_1": "Wattle Grv",
        "date_of_birth": "1984-03-71",
    }
    a, b = record(first), record(typo, 1)
    run(any_db, a, b)
    profile = profile_of(any_db, a)
    assert profile_of(any_db, b) == profile
    with any_db.read() as session:
        [merge] = session.scalars(
            select(ProfileMerge).where(ProfileMerge.survivor_id == profile)
        ).all()
        view = explain(session, WS, profile)
    assert merge.rule == "probabilistic"
    assert merge.evidence["probability"] >= 0.99
    fields = merge.evidence["fields"]
    assert fields["surname"]["level"] == "exact" and fields["given_name"]["level"] == "jw92"
    assert fields["date_of_birth"]["level"] == "one_edit"  # day and month swapped
    assert view is not None and "matched with probability" in view["text"]


def test_namesakes_and_relatives_stay_apart(any_db: Database) -> None:
    first = person()
    namesake = person(date_of_birth="1991-07-02", street_number="7", address_1="Banksia Road")
    daughter = {**first, "given_name": "Chloe", "date_of_birth": "2012-05-30"}
    a, b, c = record(first), record(namesake, 1), record(daughter, 2)
    run(any_db, a, b, c)
    assert len({profile_of(any_db, r) for r in (a, b, c)}) == 3


def test_swapped_names_still_match(any_db: Database) -> None:
    first = person()
    swapped = {**first, "given_name": first["surname"], "surname": first["given_name"]}
    a, b = record(first), record(swapped, 1)
    run(any_db, a, b)
    assert profile_of(any_db, a) == profile_of(any_db, b)


def test_the_uncertain_middle_waits_for_a_person(any_db: Database) -> None:
    first = person(postcode="5871")  # not one or two edits from 0999 (a random one can be)
    # same name, suburb and state, another street and postcode, no birth date: maybe moved
    maybe = {k: v for k, v in first.items() if k != "date_of_birth"}
    maybe.update(street_number="3", address_1="Kurrajong Avenue", postcode="0999")
    a, b = record(first), record(maybe, 1)
    run(any_db, a, b)
    pa, pb = profile_of(any_db, a), profile_of(any_db, b)
    assert pa != pb
    with any_db.read() as session:
        pending = [
            r for r in list_reviews(session, WS) if set(r["current_profile_ids"]) == {pa, pb}
        ]
    [review] = pending
    assert 0.80 <= review["probability"] < 0.99
    assert review["evidence"]["fields"]["address_1"]["level"] == "else"

    with any_db.write() as session:
        view, link = decide(
            session, WS, review["id"], accept=True, by="test", config=IdentityConfig()
        )
        assert link is not None and view["status"] == "accepted"
        ingest(session, [link], workspace_id=WS, default_region="US")
    published: list[list[int]] = []
    relay(any_db, published.append, batch_size=500, lease_seconds=60)
    for message in published:
        process_batches(any_db, message)
    assert profile_of(any_db, a) == profile_of(any_db, b)
    with any_db.write() as session:  # deciding again the same way links nothing twice
        again, link = decide(
            session, WS, review["id"], accept=True, by="test", config=IdentityConfig()
        )
        assert link is None and again["status"] == "accepted"
        status = session.scalar(
            select(IdentityReview.status).where(IdentityReview.id == review["id"])
        )
    assert status == "accepted"


def test_a_match_never_breaks_a_limit(any_db: Database) -> None:
    first = person()
    a = record(first, 0, user_id=f"u1-{uuid.uuid4().hex[:6]}")
    b = record({**first, "given_name": "Margret"}, 1, user_id=f"u2-{uuid.uuid4().hex[:6]}")
    run(any_db, a, b)
    assert profile_of(any_db, a) != profile_of(any_db, b)  # two user ids: two people


def test_matching_can_be_switched_off(any_db: Database) -> None:
    off = IdentityConfig.from_mapping({"matching": {"enabled": False}})
    first = person()
    a, b = record(first), record({**first, "given_name": "Margret"}, 1)
    run(any_db, a, b, config=off)
    assert profile_of(any_db, a) != profile_of(any_db, b)
