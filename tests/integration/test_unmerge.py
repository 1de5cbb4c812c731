"""Unmerge on real SQLite and PostgreSQL: the split equals a fresh replay with the rule.

Every scenario is checked the same way: the hub's state after ``unmerge`` must partition
events and identifiers exactly as a fresh database does when the same events are
ingested, in the same batches, with the split rule recorded before the first one.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import fresh_postgres, ingest_and_process, migrated
from sqlalchemy import select

from identity.changes import changes_after
from identity.config import IdentityConfig
from identity.explain import explain
from identity.models import IdentityConflict, Profile, ProfileEvent, ProfileIdentifier
from identity.splits import add_split
from identity.unmerge import ProfileNotFound, unmerge
from identity.views import profile_view
from pipeline import Database, ValidationError, utcnow
from pipeline.models import Event

T0 = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
WS = "default"
CONFIG = IdentityConfig()

Partition = set[tuple[frozenset[str], frozenset[str]]]


def ev(
    minute: int, source: str = "web", traits: dict[str, Any] | None = None, **ids: str
) -> dict[str, Any]:
    return {
        "message_id": f"um-{uuid.uuid4().hex}",
        "channel": "pos" if source.startswith("pos") else "web",
        "type": "order.completed" if source.startswith("pos") else "page.viewed",
        "occurred_at": T0 + timedelta(minutes=minute),
        "source": source,
        "identifiers": ids,
        "traits": traits or {},
    }


def run(db: Database, *batches: list[dict[str, Any]]) -> None:
    ingest_and_process(db, *batches, config=CONFIG)


def partition(db: Database) -> Partition:
    """Each live profile as (message ids of its events, identifiers it holds)."""
    with db.read() as session:
        events: dict[str, set[str]] = {}
        for pid, message_id in session.execute(
            select(ProfileEvent.profile_id, Event.message_id).join(
                Event, Event.id == ProfileEvent.event_id
            )
        ):
            events.setdefault(pid, set()).add(message_id)
        held: dict[str, set[str]] = {}
        for pid, kind, value in session.execute(
            select(ProfileIdentifier.profile_id, ProfileIdentifier.kind, ProfileIdentifier.value)
        ):
            held.setdefault(pid, set()).add(f"{kind}:{value}")
        live = set(session.scalars(select(Profile.id).where(Profile.merged_into.is_(None))))
    assert set(events) <= live and set(held) <= live
    return {(frozenset(events.get(pid, ())), frozenset(held.get(pid, ()))) for pid in live}


def profile_holding(db: Database, kind: str, value: str) -> str:
    with db.read() as session:
        return str(
            session.scalars(
                select(ProfileIdentifier.profile_id).where(
                    ProfileIdentifier.kind == kind, ProfileIdentifier.value == value
                )
            ).one()
        )


def fresh_replay(
    url: str, batches: list[list[dict[str, Any]]], sides: dict[str, list[tuple[str, str]]]
) -> Partition:
    """The same batches into an empty database whose split rule exists from the start."""
    db = migrated(url)
    try:
        with db.write() as session:
            add_split(
                session,
                WS,
                profile_id="prof_x",
                mode="identifier",
                target="-",
                sides=sides,
                reason=None,
                requested_by=None,
                now=utcnow(),
            )
        run(db, *batches)
        return partition(db)
    finally:
        db.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def urls(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """The hub's database and an independent one for the fresh replay."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/a.db", f"sqlite:///{tmp_path}/b.db"
        return
    with fresh_postgres() as first, fresh_postgres() as second:
        yield first, second


def test_removing_the_bridging_phone_splits_the_profile_like_a_fresh_replay(
    urls: tuple[str, str],
) -> None:
    a, p, b = "ann@example.com", "+14155550101", "ann.b@example.com"
    batches = [
        [ev(0, traits={"name": "Ann"}, email=a)],
        [ev(1, source="pos-1", traits={"city": "Oslo"}, phone=p)],
        [ev(2, email=a, phone=p), ev(3, email=b, phone=p)],
        [ev(4, source="pos-1", phone=p, loyalty_card="L-77")],
    ]
    db = migrated(urls[0])
    try:
        run(db, *batches)
        survivor = profile_holding(db, "email", a)
        merged_away = profile_holding(db, "phone", p)
        assert survivor == merged_away  # one person so far
        with db.read() as session:
            merged_ids = set(
                session.scalars(select(Profile.id).where(Profile.merged_into == survivor))
            )
        assert merged_ids, "the phone's profile was merged in"
        with db.write() as session:
            result = unmerge(
                session,
                WS,
                survivor,
                identifier=("phone", p),
                reason="wrong number on a receipt",
                requested_by="ops",
                config=CONFIG,
            )
        assert result["profile_id"] == survivor and result["events"] == 5
        after = partition(db)
        assert after == fresh_replay(
            urls[1],
            batches,
            {"a": [("phone", p)], "b": [("email", a), ("email", b), ("loyalty_card", "L-77")]},
        )
        # the kept person keeps the id; the phone went to a profile of its own
        assert profile_holding(db, "email", a) == survivor
        phone_profile = profile_holding(db, "phone", p)
        assert phone_profile != survivor and phone_profile in result["split_off"]
        by_identifiers = {ids: events for events, ids in after}
        assert by_identifiers[frozenset({f"email:{a}"})] == {
            batches[0][0]["message_id"],
            batches[2][0]["message_id"],
        }
        with db.read() as session:
            view = profile_view(session, WS, survivor)
            assert view is not None and view["traits"] == {"name": "Ann"}
            assert view["event_count"] == 2
            phone_view = profile_view(session, WS, phone_profile)
            assert phone_view is not None and phone_view["traits"] == {"city": "Oslo"}
            # every old id still answers: it is a part or redirects to one
            for old in merged_ids:
                redirected = profile_view(session, WS, old)
                assert redirected is not None
            [change] = [c for c in changes_after(session, WS) if c["type"] == "profile.unmerged"]
            assert change["profile_id"] == survivor
            assert change["data"]["split_off"] == result["split_off"]
            tree = explain(session, WS, survivor, config=CONFIG)
            assert tree is not None and "phone" not in tree["text"]
    finally:
        db.dispose()


def test_the_split_holds_for_later_events(urls: tuple[str, str]) -> None:
    a, p = "bo@example.com", "+14155550102"
    db = migrated(urls[0])
    try:
        run(db, [ev(0, email=a)], [ev(1, phone=p)], [ev(2, email=a, phone=p)])
        survivor = profile_holding(db, "email", a)
        with db.write() as session:
            unmerge(session, WS, survivor, identifier=("phone", p), config=CONFIG)
        later = ev(10, email=a, phone=p)
        run(db, [later])
        assert profile_holding(db, "phone", p) != profile_holding(db, "email", a)
        with db.read() as session:
            reasons = [
                c.reason
                for c in session.scalars(
                    select(IdentityConflict).where(IdentityConflict.reason == "kept_apart")
                )
            ]
        assert reasons, "the refused join is visible as a kept_apart conflict"
    finally:
        db.dispose()


def test_splitting_off_one_sources_events(urls: tuple[str, str]) -> None:
    card, email, other = "L-9", "cy@example.com", "cy2@example.com"
    batches = [
        [ev(0, email=email, customer_id="C-1", traits={"name": "Cy"})],
        # an import that mapped another customer's card onto Cy's receipts
        [ev(1, source="pos-bad", loyalty_card=card, email=email)],
        [ev(2, source="pos-bad", loyalty_card=card, traits={"name": "Dee"})],
        [ev(3, email=other, customer_id="C-1")],
    ]
    db = migrated(urls[0])
    try:
        run(db, *batches)
        survivor = profile_holding(db, "email", email)
        assert profile_holding(db, "loyalty_card", card) == survivor
        with db.read() as session:
            view = profile_view(session, WS, survivor)
        assert view is not None and view["traits"]["name"] == "Dee"  # the import's name won
        with db.write() as session:
            result = unmerge(session, WS, survivor, source="pos-bad", config=CONFIG)
        assert result["bridging"] == [f"email:{email}"]
        kept = [("email", email), ("email", other), ("customer_id", "C-1")]
        sides = {"a": [("loyalty_card", card)], "b": kept}
        assert partition(db) == fresh_replay(urls[1], batches, sides)
        card_profile = profile_holding(db, "loyalty_card", card)
        assert card_profile != survivor == profile_holding(db, "email", other)
        with db.read() as session:
            dee = profile_view(session, WS, card_profile)
        assert dee is not None and dee["traits"] == {"name": "Dee"} and dee["event_count"] == 1
        with db.read() as session:
            cy = profile_view(session, WS, survivor)
        assert cy is not None and cy["traits"] == {"name": "Cy"} and cy["event_count"] == 3
    finally:
        db.dispose()


def test_bad_requests_name_the_field(sqlite_db: Database) -> None:
    run(sqlite_db, [ev(0, email="d@example.com")])
    pid = profile_holding(sqlite_db, "email", "d@example.com")
    with sqlite_db.write() as session:
        with pytest.raises(ProfileNotFound):
            unmerge(session, WS, "prof_nobody", identifier=("email", "x@y.z"), config=CONFIG)
        with pytest.raises(ValidationError) as held:
            unmerge(session, WS, pid, identifier=("phone", "+14155550000"), config=CONFIG)
        assert held.value.field == "identifier"
        with pytest.raises(ValidationError) as only:
            unmerge(session, WS, pid, identifier=("email", "d@example.com"), config=CONFIG)
        assert "only identifier" in str(only.value)
        with pytest.raises(ValidationError) as source:
            unmerge(session, WS, pid, source="nowhere", config=CONFIG)
        assert source.value.field == "source"


def test_the_kept_side_keeps_the_id_even_when_the_removed_identifier_founded_it(
    urls: tuple[str, str],
) -> None:
    device, email = f"dev-{uuid.uuid4().hex[:8]}", "eve@example.com"
    batches = [
        [ev(0, anonymous_id=device)],  # a shared kiosk's device id founds the profile
        [ev(1, anonymous_id=device, email=email)],
        [ev(2, email=email, traits={"name": "Eve"})],
    ]
    db = migrated(urls[0])
    try:
        run(db, *batches)
        pid = profile_holding(db, "anonymous_id", device)
        assert profile_holding(db, "email", email) == pid
        with db.write() as session:
            result = unmerge(session, WS, pid, identifier=("anonymous_id", device), config=CONFIG)
        assert profile_holding(db, "email", email) == pid
        assert result["split_off"] == [profile_holding(db, "anonymous_id", device)]
        sides = {"a": [("anonymous_id", device)], "b": [("email", email)]}
        assert partition(db) == fresh_replay(urls[1], batches, sides)
        with db.read() as session:
            view = profile_view(session, WS, pid)
        assert view is not None and view["traits"] == {"name": "Eve"}
        assert view["event_count"] == 2
    finally:
        db.dispose()
