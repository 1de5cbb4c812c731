"""Deterministic merges on real SQLite and PostgreSQL: joins, limits, blocked values, audit."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from conftest import ingest_and_process
from sqlalchemy import func, select

from identity.config import IdentityConfig
from identity.explain import explain
from identity.models import (
    IdentityConflict,
    Profile,
    ProfileEvent,
    ProfileIdentifier,
    ProfileMerge,
)
from identity.views import event_views, find_profile_id, profile_view, timeline
from pipeline import Database
from pipeline.events import get_event

T0 = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
WS = "default"


def tag() -> str:
    return uuid.uuid4().hex[:10]


def ev(
    minute: int, channel: str = "web", traits: dict[str, Any] | None = None, **ids: str
) -> dict[str, Any]:
    return {
        "message_id": f"idm-{uuid.uuid4().hex}",
        "channel": channel,
        "type": "page.viewed" if channel == "web" else "order.completed",
        "occurred_at": T0 + timedelta(minutes=minute),
        "identifiers": ids,
        "traits": traits or {},
    }


def run(db: Database, *batches: list[dict[str, Any]], config: IdentityConfig | None = None) -> None:
    """Ingest each list as one transaction and process it before the next."""
    ingest_and_process(db, *batches, config=config)


def profile_of(db: Database, item: dict[str, Any]) -> str | None:
    with db.read() as session:
        record = get_event(session, WS, item["message_id"])
        assert record is not None and record.status == "processed", record
        found = event_views(session, WS, [record])[0]["profile_id"]
    return str(found) if found else None


def conflicts_about(db: Database, identifier: str) -> list[IdentityConflict]:
    with db.read() as session:
        return list(
            session.scalars(
                select(IdentityConflict)
                .where(IdentityConflict.identifier == identifier)
                .order_by(IdentityConflict.id)
            )
        )


def owner(db: Database, kind: str, value: str) -> str | None:
    with db.read() as session:
        return find_profile_id(session, WS, kind, value, "US")


@pytest.mark.parametrize("same_batch", [False, True])
def test_anonymous_visit_then_login_merges_into_the_older_profile(
    any_db: Database, same_batch: bool
) -> None:
    t = tag()
    anon, email, card = f"anon-{t}", f"ann-{t}@example.com", f"LC-{t}"
    shop = ev(0, "pos", loyalty_card=card, email=email)  # oldest: the shop knows Ann
    browse = [ev(1 + i, anonymous_id=anon, traits={"plan": "free"}) for i in range(3)]
    login = ev(10, anonymous_id=anon, email=email, traits={"plan": "gold", "name": "Ann"})
    if same_batch:
        run(any_db, [shop, *browse, login])
    else:
        run(any_db, [shop], browse, [login])

    survivor = profile_of(any_db, shop)
    assert survivor is not None
    assert {profile_of(any_db, e) for e in [*browse, login]} == {survivor}
    assert owner(any_db, "anonymous_id", anon) == survivor
    with any_db.read() as session:
        view = profile_view(session, WS, survivor)
        assert view is not None
        assert view["event_count"] == 5 and view["channels"] == {"pos": 1, "web": 4}
        assert view["traits"] == {"plan": "gold", "name": "Ann"}  # most recent wins
        assert view["first_seen_at"] == T0.isoformat()
        shown = timeline(session, WS, survivor, limit=10)
        assert shown is not None and len(shown["events"]) == 5
        [merge] = session.scalars(
            select(ProfileMerge).where(ProfileMerge.survivor_id == survivor)
        ).all()
        assert merge.event_id == get_event(session, WS, login["message_id"]).event.id  # type: ignore[union-attr]
        assert merge.evidence == {
            "merged_identifier": f"anonymous_id:{anon}",
            "survivor_identifier": f"email:{email}",
        }
        merged = profile_view(session, WS, merge.merged_id)  # the old id redirects
        assert merged is not None and merged["id"] == survivor
        assert merged["merged_into"] == survivor and merged["requested_id"] == merge.merged_id
        left = session.scalar(
            select(func.count())
            .select_from(ProfileEvent)
            .where(ProfileEvent.profile_id == merge.merged_id)
        )
        assert left == 0
        counted = session.scalar(  # events are counted once, in the survivor
            select(func.sum(Profile.event_count)).where(Profile.id.in_([survivor, merge.merged_id]))
        )
        assert counted == 5


def test_a_merge_that_would_break_a_limit_is_refused_and_recorded(any_db: Database) -> None:
    t = tag()
    phone = "+1415555" + str(uuid.uuid4().int % 10000).zfill(4)
    ann = ev(0, "pos", customer_id=f"C1-{t}", phone=phone)
    bob = ev(1, "pos", customer_id=f"C2-{t}", email=f"bob-{t}@example.com")
    # a web form with Bob's email and the family phone: two customer ids would be one person
    form = ev(2, email=f"bob-{t}@example.com", phone=phone)
    run(any_db, [ann], [bob], [form])
    ann_id, bob_id = profile_of(any_db, ann), profile_of(any_db, bob)
    assert ann_id and bob_id and ann_id != bob_id
    assert profile_of(any_db, form) == bob_id  # email outranks phone: Bob's
    with any_db.read() as session:
        conflicts = [
            c for c in session.scalars(select(IdentityConflict)).all() if bob_id in c.profile_ids
        ]
    [found] = conflicts
    assert (found.reason, found.kind, found.profile_ids) == (
        "merge_refused",
        "customer_id",
        [bob_id, ann_id],
    )
    assert found.detail["limit"] == 1 and found.detail["would_hold"] == 2
    assert owner(any_db, "phone", phone) == ann_id  # the phone stays where it was


def test_a_second_person_behind_a_known_email_gets_a_profile_of_their_own(
    any_db: Database,
) -> None:
    t = tag()
    first = ev(0, user_id=f"u1-{t}", email=f"family-{t}@example.com")
    second = ev(1, user_id=f"u2-{t}", email=f"family-{t}@example.com")
    run(any_db, [first], [second])
    mine, theirs = profile_of(any_db, first), profile_of(any_db, second)
    assert mine and theirs and mine != theirs
    assert owner(any_db, "user_id", f"u2-{t}") == theirs
    assert owner(any_db, "email", f"family-{t}@example.com") == mine  # stays with its owner
    [conflict] = conflicts_about(any_db, f"email:family-{t}@example.com")
    assert (conflict.reason, conflict.kind, conflict.profile_ids) == (
        "distinct_person",
        "user_id",
        [theirs, mine],
    )


def test_one_identifier_too_many_is_refused_and_stays_free(any_db: Database) -> None:
    t = tag()
    first = ev(0, "pos", user_id=f"u-{t}", loyalty_card=f"LC1-{t}")
    second = ev(1, "pos", user_id=f"u-{t}", loyalty_card=f"LC2-{t}")
    run(any_db, [first], [second])
    profile = profile_of(any_db, first)
    assert profile_of(any_db, second) == profile  # the user id decides
    assert owner(any_db, "loyalty_card", f"LC2-{t}") is None  # a second card is refused
    later = ev(2, "pos", loyalty_card=f"LC2-{t}")
    run(any_db, [later])
    assert profile_of(any_db, later) not in (None, profile)  # it founds its own profile
    with any_db.read() as session:
        refused = [
            c
            for c in session.scalars(select(IdentityConflict)).all()
            if c.detail.get("identifier") == f"loyalty_card:LC2-{t}"
        ]
    assert [(c.reason, c.kind) for c in refused] == [("identifier_refused", "loyalty_card")]


def test_an_identifier_shared_by_several_people_is_flagged_and_stops_joining(
    any_db: Database,
) -> None:
    t = tag()
    card = f"WALKIN-{t}"  # the shop's walk-in card, swiped for whoever has none
    people = [ev(i, "pos", customer_id=f"C{i}-{t}", loyalty_card=card) for i in range(3)]
    run(any_db, *[[p] for p in people])
    profiles = [profile_of(any_db, p) for p in people]
    assert len(set(profiles)) == 3  # three customers, never glued together
    with any_db.read() as session:
        [sharing] = session.scalars(
            select(ProfileIdentifier.sharing).where(ProfileIdentifier.value == card)
        ).all()
    assert sharing == "shared"  # seen on three people: more than shared_after (2)
    walk_in = ev(5, "pos", loyalty_card=card)
    fourth = ev(6, "pos", customer_id=f"C4-{t}", loyalty_card=card)
    run(any_db, [walk_in], [fourth])
    assert profile_of(any_db, walk_in) is None  # a shared card alone identifies nobody
    assert profile_of(any_db, fourth) not in profiles
    assert len(conflicts_about(any_db, f"loyalty_card:{card}")) == 2  # none after the flag


def test_blocked_values_never_join_anyone(any_db: Database) -> None:
    t = tag()
    a = ev(0, user_id=f"a-{t}", email="test@shop.example")
    b = ev(1, user_id=f"b-{t}", email="test@shop.example")
    nobody = ev(2, email="noreply@shop.example")
    run(any_db, [a, b, nobody])
    assert profile_of(any_db, a) != profile_of(any_db, b)
    assert profile_of(any_db, nobody) is None  # processed, in no profile
    assert owner(any_db, "email", "test@shop.example") is None

    config = IdentityConfig.from_mapping({"blocked": {"loyalty_card": ["WALKIN-.*"]}})
    c, d = (
        ev(3, "pos", loyalty_card=f"WALKIN-{t}", email=f"c-{t}@example.com"),
        ev(4, "pos", loyalty_card=f"WALKIN-{t}", email=f"d-{t}@example.com"),
    )
    run(any_db, [c], [d], config=config)
    assert profile_of(any_db, c) != profile_of(any_db, d)


def test_chains_of_merges_end_in_one_profile_with_provenance(any_db: Database) -> None:
    t = tag()
    a = ev(0, anonymous_id=f"a-{t}")
    b = ev(1, device_id=f"d-{t}")
    c = ev(2, "pos", email=f"e-{t}@example.com")
    link1 = ev(3, anonymous_id=f"a-{t}", device_id=f"d-{t}")
    link2 = ev(4, device_id=f"d-{t}", email=f"e-{t}@example.com")
    run(any_db, [a], [b], [c], [link1, link2])
    oldest = profile_of(any_db, a)
    assert {profile_of(any_db, e) for e in (a, b, c, link1, link2)} == {oldest}
    with any_db.read() as session:
        rows = session.execute(
            select(
                ProfileIdentifier.kind, ProfileIdentifier.profile_id, ProfileIdentifier.linked_by
            )
            .where(ProfileIdentifier.value.in_([f"a-{t}", f"d-{t}", f"e-{t}@example.com"]))
            .order_by(ProfileIdentifier.kind)
        ).all()
        merges = session.scalar(
            select(func.count()).select_from(ProfileMerge).where(ProfileMerge.survivor_id == oldest)
        )
    assert [(kind, pid) for kind, pid, _ in rows] == [
        ("anonymous_id", oldest),
        ("device_id", oldest),
        ("email", oldest),
    ]
    assert all(linked is None for *_, linked in rows)  # each founded its own profile
    assert merges == 2


def test_explain_shows_founders_links_and_merges_as_a_tree(any_db: Database) -> None:
    t = tag()
    shop = ev(0, "pos", loyalty_card=f"LC-{t}", email=f"ann-{t}@example.com")
    web = ev(1, anonymous_id=f"anon-{t}")
    login = ev(2, anonymous_id=f"anon-{t}", user_id=f"u-{t}", email=f"ann-{t}@example.com")
    run(any_db, [shop], [web], [login])
    survivor = profile_of(any_db, shop)
    assert survivor
    with any_db.read() as session:
        view = explain(session, WS, survivor)
        merged_away = session.scalar(
            select(ProfileMerge.merged_id).where(ProfileMerge.survivor_id == survivor)
        )
    assert view is not None and merged_away
    assert (view["identifiers"], view["merges"]) == (4, 1)
    roots = {node["identifier"]: node for node in view["tree"]}
    assert set(roots) == {f"email:ann-{t}@example.com", f"loyalty_card:LC-{t}"}
    email = roots[f"email:ann-{t}@example.com"]
    assert email["source_event"] == shop["message_id"]
    assert email["reason"] == f"founded {survivor} with event {shop['message_id']}"
    children = {c.get("identifier") or c["merged_profile"]: c for c in email["children"]}
    assert set(children) == {f"user_id:u-{t}", merged_away}
    assert children[f"user_id:u-{t}"]["reason"] == (
        f"event {login['message_id']} carried it with email:ann-{t}@example.com, "
        "which already belonged here"
    )
    merge = children[merged_away]
    assert merge["event"] == login["message_id"]
    assert [c["identifier"] for c in merge["children"]] == [f"anonymous_id:anon-{t}"]
    assert merge["children"][0]["source_event"] == web["message_id"]
    assert [e["via"] for e in view["events"]] == [
        f"user_id:u-{t}",
        f"anonymous_id:anon-{t}",
        f"email:ann-{t}@example.com",
    ]
    assert view["text"].splitlines()[0] == survivor
    assert f"<= {merged_away}" in view["text"]
