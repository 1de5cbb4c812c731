"""GDPR erasure and export on real SQLite and PostgreSQL.

A person is built the way the hub builds one (events ingested, relayed and processed by
the worker's code), with the rows that mention them elsewhere (a refused identifier, a
review, an unmerge, the change feed, consent, an action, refused mail). After erasure no
table holds any of their identifiers, names or message text, the aggregates are as they
were, and tombstones suppress later events only when configured, and only under the key.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import ingest_and_process
from sqlalchemy import event, select

import connectors.email.models  # noqa: F401  (every package's tables, for the scan)
from connectors.email.models import MAIL_FAILURES, MAILBOXES
from identity.changes import record_change
from identity.config import IdentityConfig
from identity.erasure import ERASED, ProfileNotFound, Scrubber, erase_profile, kept_properties
from identity.export import export_chunks, find_person
from identity.models import (
    CHANGES,
    CONFLICTS,
    IDENTIFIERS,
    PROFILE_EVENTS,
    PROFILES,
    REVIEWS,
    SPLIT_MEMBERS,
    SPLITS,
)
from identity.privacy_models import ERASURES, TOMBSTONES
from identity.tombstones import tombstone_key
from identity.views import event_views, find_profile_id, list_conflicts, profile_view, set_sharing
from personalization.actions import ACTIONS, NewAction, enqueue
from personalization.consent import CONSENTS
from personalization.loyalty import award, balance
from pipeline import Database, SettingsError, ingest, load_settings
from pipeline.db import Base
from pipeline.events import get_event
from pipeline.models import EVENTS
from pipeline.outbox import relay
from pipeline.processing import complete_batches, load_batches
from workers.api_privacy import ERASERS, SECTIONS
from workers.api_privacy import erase as wired_erase
from workers.processing import process_batches
from workers.runtime import Runtime

WS = "default"
T0 = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
KEY = b"erasure-test-key-0123456789"
SUPPRESSING = replace(IdentityConfig(), suppress_erased_key=KEY)


def tag() -> str:
    return uuid.uuid4().hex[:10]


def ev(
    minute: float,
    channel: str = "web",
    type_: str = "page.viewed",
    *,
    traits: dict[str, Any] | None = None,
    properties: dict[str, Any] | None = None,
    context: dict[str, Any] | None = None,
    **ids: str,
) -> dict[str, Any]:
    return {
        "message_id": f"er-{uuid.uuid4().hex}",
        "channel": channel,
        "type": type_,
        "occurred_at": T0 + timedelta(minutes=minute),
        "identifiers": ids,
        "traits": traits or {},
        "properties": properties or {},
        "context": context or {},
    }


def run(db: Database, *batches: list[dict[str, Any]], config: IdentityConfig | None = None) -> None:
    """Ingest each list as one transaction and process it (the worker's code) before the next."""
    ingest_and_process(db, *batches, config=config, batch_size=5000)


def view_of(db: Database, item: dict[str, Any]) -> dict[str, Any]:
    with db.read() as session:
        record = get_event(session, WS, item["message_id"])
        assert record is not None
        return event_views(session, WS, [record])[0]


def owner(db: Database, kind: str, value: str) -> str | None:
    with db.read() as session:
        return find_profile_id(session, WS, kind, value, "US")


@dataclass
class Ann:
    """A person spread over every table, and the words that must not survive her erasure."""

    survivor: str
    merged: str
    email: str
    phone: str
    anon: str
    secrets: list[str]
    events: list[dict[str, Any]]
    bob: str
    bob_email: str


def build_ann(db: Database) -> Ann:
    t = tag()
    first, last = f"Annabel{t}", f"Quist{t}"
    email, anon, user = f"ann.{t}@example.com", f"anon-{t}", f"u-{t}"
    card, c1, c2 = f"LC-{t}", f"C1-{t}", f"C2-{t}"
    phone = f"+1415555{random.randint(1000, 9999)}"
    ip, street = f"10.{random.randint(1, 250)}.{random.randint(1, 250)}.77", f"{t} Rue Secrete"
    body = f"Hello it is {first}, secret-{t}"
    postcode = f"ZX{random.randint(100, 999)}QY"  # nothing else in a table looks like it
    order = ev(
        0,
        "pos",
        "order.completed",
        traits={"first_name": first, "date_of_birth": "1980-02-03", "postcode": postcode},
        properties={
            "total": 35.7,
            "currency": "EUR",
            "item_count": 1,
            "items": [{"name": f"Gift for {first}", "amount": 35.7}],
            "cashier_note": f"regular, knows {last}",
        },
        context={"till": "R2"},
        email=email,
        loyalty_card=card,
        customer_id=c1,
    )
    visit = ev(
        1,
        traits={"nickname": f"annie-{t}"},
        context={"ip": ip, "page": {"url": f"https://shop.example/?e={email}"}},
        anonymous_id=anon,
    )
    login = ev(
        2,
        "web",
        "user.identified",
        traits={"last_name": last, "address": {"street": street}},
        anonymous_id=anon,
        user_id=user,
        email=email,
    )
    sms = ev(
        3,
        "sms",
        "sms.received",
        properties={"body": body, "from": phone, "num_segments": 1},
        phone=phone,
        user_id=user,
    )
    opt_out = ev(
        4,
        "email",
        "email.received",
        properties={
            "consent": {"channel": "email", "status": "opted_out"},
            "subject": f"stop {first}",
        },
        email=email,
    )
    second_card = ev(
        5, "pos", "order.completed", properties={"total": 5}, user_id=user, customer_id=c2
    )
    bob_email = f"bob.{t}@example.com"
    bob_event = ev(6, traits={"first_name": f"Robert{t}"}, email=bob_email)
    run(db, [order], [visit], [login], [sms, opt_out], [second_card, bob_event])
    survivor = owner(db, "email", email)
    merged = view_of(db, visit)["profile_id"]
    bob = owner(db, "email", bob_email)
    assert survivor and bob and survivor != bob
    with db.read() as session:
        merged_rows = (
            session.execute(select(PROFILES.c.id).where(PROFILES.c.merged_into == survivor))
            .scalars()
            .all()
        )
    assert len(merged_rows) == 1
    merged = merged_rows[0]
    with db.write() as session:
        enqueue(
            session,
            WS,
            NewAction(
                kind="email.send",
                recipient=email,
                payload={"subject": f"Dear {first}", "text": f"About your order, {last}"},
                profile_id=survivor,
            ),
        )
        session.execute(
            REVIEWS.insert(),
            {
                "workspace_id": WS,
                "profile_id": bob,
                "candidate_id": survivor,
                "probability": 0.9,
                "evidence": {"rule": "probabilistic", "note": f"{last} vs Robert"},
                "status": "pending",
                "created_at": T0,
            },
        )
        split_id = session.execute(
            SPLITS.insert().returning(SPLITS.c.id),
            {
                "workspace_id": WS,
                "profile_id": survivor,
                "mode": "identifier",
                "target": f"phone:{phone}",
                "reason": f"{first} says the phone is not hers",
                "requested_by": "test",
                "result": {"identifiers": [f"phone:{phone}"]},
                "created_at": T0,
            },
        ).scalar_one()
        session.execute(
            SPLIT_MEMBERS.insert(),
            {
                "split_id": split_id,
                "kind": "phone",
                "value": phone,
                "workspace_id": WS,
                "side": "a",
            },
        )
        record_change(session, WS, "profile.unmerged", survivor, {"split_off": f"phone:{phone}"})
        mailbox = session.execute(
            MAILBOXES.insert().returning(MAILBOXES.c.id),
            {
                "workspace_id": WS,
                "name": f"mb-{t}",
                "host": "imap.example",
                "port": 993,
                "security": "tls",
                "username": "care@shop.example",
                "password_env": "X",
                "folders": ["INBOX"],
                "enabled": True,
                "created_at": T0,
                "updated_at": T0,
            },
        ).scalar_one()
        session.execute(
            MAIL_FAILURES.insert(),
            {
                "workspace_id": WS,
                "mailbox_id": mailbox,
                "folder": "INBOX",
                "uidvalidity": 1,
                "uid": 7,
                "message_id": f"<{t}@example.com>",
                "size": 30_000_000,
                "reason": "message over ECRM_MAIL_MAX_BYTES",
                "failed_at": T0,
                "raw_headers": f"From: {first} <{email.upper()}>\r\nSubject: big",
            },
        )
    secrets = [first, last, email, anon, user, card, c1, c2, phone, ip, street, f"secret-{t}"]
    secrets += [f"annie-{t}", postcode]
    events = [order, visit, login, sms, opt_out, second_card]
    return Ann(survivor, merged, email, phone, anon, secrets, events, bob, bob_email)


def leaks(db: Database, secrets: list[str]) -> list[str]:
    """Every (table, secret) where a row of any table still holds one of the secrets."""
    found = []
    with db.read() as session:
        for table in Base.metadata.sorted_tables:
            for row in session.execute(select(table)):
                text = json.dumps([str(value) for value in row]).casefold()
                found += [f"{table.name}: {s}" for s in secrets if s.casefold() in text]
    return sorted(set(found))


@contextmanager
def counting(db: Database) -> Iterator[list[str]]:
    statements: list[str] = []

    def count(*args: Any) -> None:
        statements.append(args[2])

    event.listen(db.engine, "before_cursor_execute", count)
    try:
        yield statements
    finally:
        event.remove(db.engine, "before_cursor_execute", count)


def erase(db: Database, profile_id: str, **kwargs: Any) -> Any:
    with db.write() as session:
        return erase_profile(session, WS, profile_id, key=KEY, also=ERASERS, **kwargs)


def test_erasure_leaves_no_pii_anywhere_and_keeps_the_aggregates(any_db: Database) -> None:
    ann = build_ann(any_db)
    with any_db.write() as session:  # an operator's note on the ledger names her
        award(session, WS, ann.survivor, 40, reason=f"goodwill for {ann.email}", source="test")
    with any_db.read() as session:
        before = profile_view(session, WS, ann.survivor)
        bob_before = profile_view(session, WS, ann.bob)
    before_events = {e["message_id"]: view_of(any_db, e) for e in ann.events}
    assert before is not None and bob_before is not None
    assert leaks(any_db, ann.secrets)  # the scan finds them while they are there

    # the merged-away id erases the whole person
    result = erase(any_db, ann.merged, requested_by="test", reason=f"{ann.secrets[0]} asked")
    summary = result.view()
    assert summary["profile_id"] == ann.survivor and summary["requested_id"] == ann.merged
    assert set(summary["profile_ids"]) == {ann.survivor, ann.merged}
    assert not summary["already_erased"] and summary["erasure_id"] == summary["first_erasure_id"]
    counts = summary["counts"]
    assert counts["events"] == len(ann.events) and counts["identifiers"] == 6
    assert counts["profiles"] == 2  # the merged-away row had traits of its own
    assert counts["match_keys"] >= 1  # blocking keys of names, birth date, postcode
    assert counts["tombstones"] >= 6 and counts["traits"] == 7 and counts["merges"] == 1
    assert counts["conflicts"] >= 1 and counts["reviews"] == 1 and counts["unmerges"] == 2
    # the change feed: the unmerge, the merge's evidence (identifiers), the goodwill entry
    assert counts["changes"] == 3 and counts["consents"] == 1 and counts["actions"] == 1
    assert counts["mail_failures"] == 1 and counts["loyalty_reasons"] == 1
    with any_db.read() as session:  # the points are an aggregate: they stay
        assert balance(session, WS, ann.survivor) == 40

    assert leaks(any_db, ann.secrets) == []

    with any_db.read() as session:
        after = profile_view(session, WS, ann.survivor)
        bob_after = profile_view(session, WS, ann.bob)
        traits = dict(
            session.execute(
                select(PROFILES.c.id, PROFILES.c.traits).where(
                    PROFILES.c.id.in_([ann.survivor, ann.merged])
                )
            ).all()
        )
        consent = session.execute(select(CONSENTS)).one()
        action = session.execute(select(ACTIONS)).one()
        tombstones = session.execute(select(TOMBSTONES)).all()
    assert after is not None
    assert traits == {ann.survivor: {}, ann.merged: {}}  # the merged-away row too
    for name in ("event_count", "channels", "first_seen_at", "last_seen_at", "created_at"):
        assert after[name] == before[name], name
    assert [i["kind"] for i in after["identifiers"]] == [i["kind"] for i in before["identifiers"]]
    assert all(i["value"].startswith("erased:") for i in after["identifiers"])
    assert [
        (i["channel"], i["first_seen_at"], i["last_seen_at"]) for i in after["identifiers"]
    ] == [(i["channel"], i["first_seen_at"], i["last_seen_at"]) for i in before["identifiers"]]
    assert bob_after == bob_before  # someone else is left alone

    for item in ann.events:
        old, new = before_events[item["message_id"]], view_of(any_db, item)
        for name in ("message_id", "channel", "type", "occurred_at", "received_at", "status"):
            assert new[name] == old[name], name
        assert new["profile_id"] == ann.survivor
        assert new["traits"] == {} and new["context"] == {"erased": True}
        assert all(v.startswith("erased:") for v in new["identifiers"].values())
    order = view_of(any_db, ann.events[0])
    assert order["properties"] == {"total": 35.7, "currency": "EUR", "item_count": 1}
    assert view_of(any_db, ann.events[3])["properties"] == {"num_segments": 1}
    # the same placeholder wherever an identifier appears: a replay rebuilds this profile
    held = {i["kind"]: i["value"] for i in after["identifiers"]}
    assert view_of(any_db, ann.events[2])["identifiers"]["email"] == held["email"]
    assert view_of(any_db, ann.events[1])["identifiers"] == {"anonymous_id": held["anonymous_id"]}

    assert (consent.status, consent.channel) == ("opted_out", "email")
    assert consent.address.startswith("erased:")
    assert action.status == "suppressed" and action.payload == {}
    assert {t.key_id for t in tombstones} == {result.key_id}
    expected = hmac.new(KEY, f"email\0{ann.email}".encode(), hashlib.sha256).hexdigest()
    assert expected in {t.digest for t in tombstones}

    with any_db.read() as session:
        changes = [c for c in session.execute(select(CHANGES)).all() if c.type == "profile.erased"]
        audit = session.execute(select(ERASURES)).all()
    assert len(changes) == 1 and changes[0].profile_id == ann.survivor
    assert changes[0].data["erasure_id"] == result.erasure_id
    assert changes[0].data["counts"] == counts
    assert len(audit) == 1 and audit[0].reason == f"{ERASED} asked"


def test_erasing_twice_changes_nothing_more(any_db: Database) -> None:
    ann = build_ann(any_db)
    first = erase(any_db, ann.survivor)
    with any_db.read() as session:
        events = session.execute(select(EVENTS).order_by(EVENTS.c.id)).all()
        identifiers = session.execute(select(IDENTIFIERS).order_by(IDENTIFIERS.c.id)).all()
    again = erase(any_db, ann.merged)
    assert again.erasure_id is None and not any(again.counts.values())
    assert again.view()["already_erased"] and again.first_erasure_id == first.erasure_id
    with any_db.read() as session:
        assert session.execute(select(EVENTS).order_by(EVENTS.c.id)).all() == events
        assert session.execute(select(IDENTIFIERS).order_by(IDENTIFIERS.c.id)).all() == identifiers
        assert len(session.execute(select(ERASURES)).all()) == 1
        changes = session.execute(select(CHANGES)).all()
    assert [c.type for c in changes].count("profile.erased") == 1
    with pytest.raises(ProfileNotFound):
        erase(any_db, "prof_nobody")


def test_later_events_recreate_no_one_only_when_suppression_is_on(any_db: Database) -> None:
    ann = build_ann(any_db)
    erasure = erase(any_db, ann.survivor)

    # off by default: the address comes back as a new person, nothing of the old joins
    back = ev(30, "email", "email.received", traits={"name": "Ann again"}, email=ann.email)
    run(any_db, [back])
    fresh = view_of(any_db, back)["profile_id"]
    assert fresh is not None and fresh != ann.survivor
    assert owner(any_db, "email", ann.email) == fresh

    # on: a tombstoned identifier (with one never seen) founds nothing, and says so
    t = tag()
    late = ev(40, "web", traits={"first_name": "Ann"}, anonymous_id=f"new-{t}", phone=ann.phone)
    run(any_db, [late], config=SUPPRESSING)
    view = view_of(any_db, late)
    assert view["status"] == "processed" and view["profile_id"] is None
    assert owner(any_db, "anonymous_id", f"new-{t}") is None
    assert owner(any_db, "phone", ann.phone) is None
    with any_db.read() as session:
        listed, _ = list_conflicts(session, WS, limit=1000)
        counted = session.execute(
            select(PROFILE_EVENTS).where(
                PROFILE_EVENTS.c.event_id == get_event(session, WS, late["message_id"]).event.id  # type: ignore[union-attr]
            )
        ).all()
    assert counted == []
    [suppressed] = [c for c in listed if c["event"] == late["message_id"]]
    assert suppressed["reason"] == "suppressed" and suppressed["kind"] == "phone"
    assert suppressed["detail"]["erasure_ids"] == [erasure.erasure_id]
    assert suppressed["detail"]["identifiers"] == ["phone:(erased)"]
    assert suppressed["profile_ids"] == []

    # an unrelated event goes on as usual
    normal = ev(41, email=f"carol.{t}@example.com")
    run(any_db, [normal], config=SUPPRESSING)
    assert view_of(any_db, normal)["profile_id"] is not None

    # erasing again scrubs the suppressed event and buries the device it brought
    again = erase(any_db, ann.survivor)
    assert again.counts["events"] == 1 and again.counts["tombstones"] == 1
    assert leaks(any_db, [f"new-{t}"]) == []
    scrubbed = view_of(any_db, late)
    assert scrubbed["identifiers"] == {} and scrubbed["traits"] == {}


def test_tombstones_match_only_under_their_key(any_db: Database) -> None:
    ann = build_ann(any_db)
    erase(any_db, ann.survivor)
    other_key = replace(IdentityConfig(), suppress_erased_key=b"another-key-0123456789")
    late = ev(50, email=ann.email)
    run(any_db, [late], config=other_key)
    assert view_of(any_db, late)["profile_id"] is not None  # not recognised: another key
    with any_db.read() as session:
        digests = {row.digest for row in session.execute(select(TOMBSTONES))}
    assert ann.email not in " ".join(digests)


def test_pending_and_failed_events_of_the_person_are_erased_too(any_db: Database) -> None:
    ann = build_ann(any_db)
    t = tag()
    pending = ev(
        60, "email", "email.received", properties={"subject": f"pending-{t}"}, email=ann.email
    )
    with any_db.write() as session:  # appended, not yet processed (its batch is queued)
        ingest(session, [pending], workspace_id=WS, default_region="US")
    result = erase(any_db, ann.survivor)
    assert result.counts["events"] == len(ann.events) + 1
    assert leaks(any_db, [*ann.secrets, f"pending-{t}"]) == []
    published: list[list[int]] = []
    relay(any_db, published.append, batch_size=500, lease_seconds=60)
    for message in published:
        process_batches(any_db, message)
    # processed after the erasure, it is counted in the erased profile, with nothing personal
    assert view_of(any_db, pending)["profile_id"] == ann.survivor
    with any_db.read() as session:
        shown = profile_view(session, WS, ann.survivor)
    assert shown is not None and shown["traits"] == {}


def test_export_holds_everything_in_pages_with_few_queries(any_db: Database) -> None:
    ann = build_ann(any_db)
    many = [ev(100 + i / 10, anonymous_id=ann.anon, properties={"n": i}) for i in range(1100)]
    run(any_db, many)
    with any_db.read() as session, counting(any_db) as statements:
        person = find_person(session, WS, ann.merged)
        assert person is not None
        document = orjson.loads(b"".join(export_chunks(session, person, SECTIONS)))
    assert len(statements) <= 40, statements  # 1,106 events: pages, not a query each
    assert document["profile_id"] == ann.survivor and document["requested_id"] == ann.merged
    assert document["event_count"] == len(document["events"]) == 1100 + len(ann.events)
    times = [e["occurred_at"] for e in document["events"]]
    assert times == sorted(times)
    assert {e["message_id"] for e in document["events"]} >= {e["message_id"] for e in ann.events}
    assert document["events"][0]["properties"]["items"][0]["name"].startswith("Gift for")
    by_kind = {i["kind"]: i for i in document["identifiers"]}
    assert by_kind["email"]["value"] == ann.email and by_kind["phone"]["value"] == ann.phone
    assert by_kind["email"]["channel"] == "pos" and by_kind["anonymous_id"]["channel"] == "web"
    assert by_kind["email"]["source_event"] == ann.events[0]["message_id"]
    assert by_kind["user_id"]["linked_by"] is not None
    assert by_kind["email"]["first_seen_at"].startswith("2026-11-01T09:00:00")
    assert document["profile"]["traits"]["first_name"].startswith("Annabel")
    assert [p["id"] for p in document["merged_profiles"]] == [ann.merged]
    assert len(document["merges"]) == 1
    assert {c["reason"] for c in document["conflicts"]} >= {"identifier_refused"}
    assert len(document["reviews"]) == 1 and len(document["unmerges"]) == 1
    assert document["unmerges"][0]["members"] == [
        {"kind": "phone", "value": ann.phone, "side": "a"}
    ]
    assert [c["address"] for c in document["consents"]] == [ann.email]
    assert [a["recipient"] for a in document["actions"]] == [ann.email]
    assert len(document["refused_mail"]) == 1
    assert document["erasures"] == []

    # erasing that person is a bounded number of statements too, not one per event
    with counting(any_db) as statements:
        erase(any_db, ann.survivor)
    assert len(statements) <= 80, statements
    with any_db.read() as session:
        person = find_person(session, WS, ann.survivor)
        assert person is not None
        after = orjson.loads(b"".join(export_chunks(session, person, SECTIONS)))
    assert after["event_count"] == document["event_count"]
    assert len(after["erasures"]) == 1
    assert leaks(any_db, ann.secrets) == []


def test_scrubber_and_kept_properties() -> None:
    scrub = Scrubber()
    placeholder = scrub.placeholder("email", "ann@example.com")
    assert (
        placeholder.startswith("erased:")
        and scrub.placeholder("email", "ann@example.com") == placeholder
    )
    assert scrub.placeholder("email", placeholder) == placeholder  # already erased
    scrub.remember({"first_name": "Annabel", "age": 41, "zip": 75001, "tags": ["VIP-gold"]})
    assert scrub.text("email:ann@example.com") == f"email:{placeholder}"
    assert scrub.text("Annabel wrote from ANN@example.com") == f"{ERASED} wrote from {ERASED}"
    assert scrub.doc({"Annabel": ["zip 75001", 41, True], "x": "vip-GOLD"}) == {
        ERASED: [f"zip {ERASED}", 41, True],
        "x": ERASED,
    }
    assert kept_properties(
        {
            "total": 12.5,
            "currency": "EUR",
            "bulk": True,
            "status": "someone@example.com",
            "kind": "x" * 65,
            "body": "hello",
            "duration": "12",
        }
    ) == {"total": 12.5, "currency": "EUR", "bulk": True}


def test_erasure_settings() -> None:
    assert load_settings({}).erasure_suppress is False
    on = load_settings({"ECRM_ERASURE_SUPPRESS": "true", "ECRM_ERASURE_KEY": "k" * 20})
    assert on.erasure_suppress and tombstone_key(on) == b"k" * 20
    assert "k" * 20 not in " ".join(on.masked().values()) and "k" * 20 not in repr(on)
    with pytest.raises(SettingsError, match="ECRM_ERASURE_KEY"):
        load_settings({"ECRM_ERASURE_KEY": "short"})
    with pytest.raises(SettingsError, match="ECRM_ERASURE_SUPPRESS"):
        load_settings({"ECRM_ERASURE_SUPPRESS": "maybe"})
    derived = load_settings({"ECRM_ADMIN_TOKEN": "admin-token-one"})
    assert tombstone_key(derived) == tombstone_key(
        load_settings({"ECRM_ADMIN_TOKEN": "admin-token-one"})
    )
    assert tombstone_key(derived) != tombstone_key(
        load_settings({"ECRM_ADMIN_TOKEN": "admin-token-two"})
    )
    assert b"admin-token-one" not in tombstone_key(derived)
    with pytest.raises(SettingsError):
        tombstone_key(load_settings({}))


def test_conflict_rows_are_rewritten_not_dropped(any_db: Database) -> None:
    ann = build_ann(any_db)
    with any_db.read() as session:
        before = session.execute(select(CONFLICTS)).all()
    erase(any_db, ann.survivor)
    with any_db.read() as session:
        after = session.execute(select(CONFLICTS)).all()
    assert [(c.id, c.reason, c.kind, c.profile_ids) for c in after] == [
        (c.id, c.reason, c.kind, c.profile_ids) for c in before
    ]


def test_the_wiring_erases_what_every_package_holds(any_db: Database, tmp_path: Path) -> None:
    """``workers.api_privacy.erase``, as the API and the CLI call it (twice on PostgreSQL)."""
    ann = build_ann(any_db)
    settings = load_settings(
        {
            "ECRM_HOME": str(tmp_path),
            "ECRM_DATABASE_URL": any_db.engine.url.render_as_string(hide_password=False),
            "ECRM_ERASURE_KEY": KEY.decode(),
        }
    )
    runtime = Runtime(settings=settings, db=any_db)
    view = wired_erase(runtime, WS, ann.merged, requested_by="test")
    assert view["profile_id"] == ann.survivor and view["already_erased"] is False
    assert (view["counts"]["consents"], view["counts"]["actions"]) == (1, 1)
    assert view["counts"]["mail_failures"] == 1
    assert leaks(any_db, ann.secrets) == []
    again = wired_erase(runtime, WS, ann.survivor, requested_by="test")
    assert again["already_erased"] is True and not any(again["counts"].values())
    with pytest.raises(ProfileNotFound):
        wired_erase(runtime, WS, "prof_nobody", requested_by="test")
    late = ev(70, email=ann.email)
    run(
        any_db,
        [late],
        config=replace(IdentityConfig(), suppress_erased_key=tombstone_key(settings)),
    )
    assert view_of(any_db, late)["profile_id"] is None


def test_what_others_hold_stays_theirs(any_db: Database) -> None:
    """A family phone: Ann's row is erased, but not buried, and Bob's event keeps it."""
    t = tag()
    phone = f"+1415555{random.randint(1000, 9999)}"
    ann_first = ev(0, traits={"first_name": f"Ann{t}"}, user_id=f"ann-{t}", phone=phone)
    bob_event = ev(1, traits={"first_name": f"Bob{t}"}, user_id=f"bob-{t}", phone=phone)
    run(any_db, [ann_first], [bob_event])
    ann, bob = owner(any_db, "user_id", f"ann-{t}"), owner(any_db, "user_id", f"bob-{t}")
    assert ann and bob and ann != bob and owner(any_db, "phone", phone) == ann
    with any_db.write() as session:
        assert set_sharing(session, WS, "phone", phone, shared=True)
    bob_before = view_of(any_db, bob_event)
    result = erase(any_db, ann)
    assert result.counts["identifiers"] == 2 and result.counts["tombstones"] == 1
    with any_db.read() as session:
        digests = {row.digest for row in session.execute(select(TOMBSTONES))}
        flagged = session.execute(
            select(IDENTIFIERS.c.value, IDENTIFIERS.c.sharing).where(IDENTIFIERS.c.kind == "phone")
        ).one()
    assert hmac.new(KEY, f"phone\0{phone}".encode(), hashlib.sha256).hexdigest() not in digests
    assert flagged.value.startswith("erased:") and flagged.sharing == "shared"
    assert view_of(any_db, bob_event) == bob_before  # Bob's event, Bob's phone
    assert leaks(any_db, [f"Ann{t}", f"ann-{t}"]) == []


def test_failed_events_are_erased_and_sent_messages_stay_duplicates(any_db: Database) -> None:
    ann = build_ann(any_db)
    t = tag()
    failing = ev(80, "sms", "sms.received", properties={"body": f"bad-{t}"}, phone=ann.phone)
    with any_db.write() as session:
        ingest(session, [failing], workspace_id=WS, default_region="US")
    published: list[list[int]] = []
    relay(any_db, published.append, batch_size=500, lease_seconds=60)
    with any_db.write() as session:  # the worker quarantines an event it cannot process
        works = load_batches(session, [b for message in published for b in message], lock=True)
        complete_batches(session, works, {works[0].events[0].id: f"boom: {ann.phone} unreachable"})
    assert view_of(any_db, failing)["status"] == "failed"
    result = erase(any_db, ann.survivor)
    assert result.counts["events"] == len(ann.events) + 1 and result.counts["failures"] == 1
    assert leaks(any_db, [*ann.secrets, f"bad-{t}"]) == []
    assert view_of(any_db, failing)["error"] == f"boom: {ERASED} unreachable"
    with any_db.write() as session:  # the same message again: a duplicate, nothing new
        [again] = ingest(session, [ann.events[0]], workspace_id=WS, default_region="US")
    assert again.status == "duplicate"


def test_an_old_id_anywhere_in_a_chain_of_merges_erases_the_whole_person(
    any_db: Database,
) -> None:
    t = tag()
    first = ev(0, traits={"a": f"zero-{t}"}, user_id=f"u-{t}")
    one = ev(1, traits={"b": f"one-{t}"}, anonymous_id=f"a1-{t}")
    two = ev(2, traits={"c": f"two-{t}"}, anonymous_id=f"a2-{t}")
    run(any_db, [first], [one], [two])
    p0, p1, p2 = (view_of(any_db, item)["profile_id"] for item in (first, one, two))
    run(
        any_db,
        [ev(3, anonymous_id=f"a1-{t}", **{"device_id": f"d-{t}"}), ev(4, anonymous_id=f"a2-{t}")],
        [ev(5, anonymous_id=f"a1-{t}", **{"card_fingerprint": f"f-{t}"})],
    )
    run(any_db, [ev(6, anonymous_id=f"a2-{t}", **{"device_id": f"d-{t}"})])  # p2 into p1
    run(any_db, [ev(7, user_id=f"u-{t}", anonymous_id=f"a1-{t}")])  # p1 (with p2) into p0
    assert owner(any_db, "anonymous_id", f"a2-{t}") == p0
    with any_db.read() as session:
        redirects = dict(
            session.execute(
                select(PROFILES.c.id, PROFILES.c.merged_into).where(PROFILES.c.id.in_([p1, p2]))
            ).all()
        )
    assert redirects == {p1: p0, p2: p1}  # a chain: p2 reaches p0 through p1
    result = erase(any_db, p2)
    assert result.person.profile_id == p0 and set(result.person.profile_ids) == {p0, p1, p2}
    with any_db.read() as session:
        rows = dict(
            session.execute(
                select(PROFILES.c.id, PROFILES.c.traits).where(PROFILES.c.id.in_([p0, p1, p2]))
            ).all()
        )
    assert rows == {p0: {}, p1: {}, p2: {}}
    assert leaks(any_db, [f"zero-{t}", f"one-{t}", f"two-{t}", f"a1-{t}", f"a2-{t}"]) == []
