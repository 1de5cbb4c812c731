"""Durable tags, segments and rule-set traits on real SQLite and PostgreSQL: idempotency,
order within a call, merges, unmerge, the change feed, the profile API, export, erasure and
the migration."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from conftest import ADMIN_TOKEN
from sqlalchemy import event as sa_event
from sqlalchemy import inspect, select
from test_unmerge import CONFIG, ev, profile_holding, run

from identity.changes import changes_after
from identity.erasure import erase_profile
from identity.export import export_chunks, find_person
from identity.models import CHANGES, PROFILES
from identity.unmerge import unmerge
from personalization.labels import (
    FEED_TYPES,
    LABELS,
    LabelChange,
    Labels,
    UnknownProfile,
    apply_label_changes,
    change_for_action,
    labels_of,
    labels_of_profile,
)
from pipeline import Database, ValidationError, load_settings
from pipeline.schema import downgrade, upgrade
from workers.api import create_app
from workers.api_privacy import ERASERS, SECTIONS
from workers.runtime import Runtime

WS = "default"
T0 = datetime(2026, 12, 4, 10, 0, tzinfo=UTC)
KEY = b"k" * 32


def new_profile(db: Database, **traits: Any) -> str:
    user = f"u-{uuid.uuid4().hex[:10]}"
    run(db, [ev(0, traits=traits or None, user_id=user)])
    return profile_holding(db, "user_id", user)


def change(profile_id: str, kind: str, name: str, op: str, value: Any = None, **kw: Any) -> Any:
    return LabelChange(
        profile_id=profile_id,
        kind=kind,
        name=name,
        op=op,
        value=value,
        source=kw.pop("source", "rule:r1@1"),
        key=kw.pop("key", f"k-{uuid.uuid4().hex}"),
        **kw,
    )


def apply(db: Database, *changes: LabelChange) -> list[dict[str, Any]]:
    with db.write() as session:
        return apply_label_changes(session, WS, list(changes), now=T0)


def labels(db: Database, profile_id: str) -> Labels:
    with db.read() as session:
        return labels_of_profile(session, WS, profile_id)


def label_rows(db: Database, profile_ids: list[str]) -> list[Any]:
    with db.read() as session:
        return session.execute(
            select(LABELS).where(LABELS.c.profile_id.in_(profile_ids)).order_by(LABELS.c.id)
        ).all()


def feed(db: Database, profile_id: str) -> list[tuple[str, dict[str, Any]]]:
    with db.read() as session:
        entries = changes_after(session, WS, 0, limit=10_000)
    return [
        (c["type"], c["data"])
        for c in entries
        if c["profile_id"] == profile_id and c["type"] in FEED_TYPES.values()
    ]


@contextmanager
def counting(db: Database) -> Iterator[list[str]]:
    statements: list[str] = []

    def count(*args: Any) -> None:
        statements.append(args[2])

    sa_event.listen(db.engine, "before_cursor_execute", count)
    try:
        yield statements
    finally:
        sa_event.remove(db.engine, "before_cursor_execute", count)


def test_add_remove_unchanged_and_a_duplicate_key(any_db: Database) -> None:
    pid = new_profile(any_db)
    [added] = apply(any_db, change(pid, "tag", "VIP ", "add", key="rule:r1:7:0"))
    assert added == {"status": "added", "tag": "vip", "profile_id": pid}  # lower-cased
    # the batch is retried: the same key writes nothing, whatever the state is
    [again] = apply(any_db, change(pid, "tag", "vip", "add", key="rule:r1:7:0"))
    assert again["status"] == "duplicate"
    [same] = apply(any_db, change(pid, "tag", "vip", "add"))  # already there
    assert same["status"] == "unchanged"
    assert labels(any_db, pid).tags == ("vip",)
    [removed] = apply(any_db, change(pid, "tag", "vip", "remove"))
    [gone] = apply(any_db, change(pid, "tag", "vip", "remove"))
    assert (removed["status"], gone["status"]) == ("removed", "unchanged")
    assert labels(any_db, pid) == Labels()
    rows = label_rows(any_db, [pid])
    assert [(r.kind, r.name, r.op, r.source) for r in rows] == [
        ("tag", "vip", "add", "rule:r1@1"),
        ("tag", "vip", "remove", "rule:r1@1"),
    ]
    assert rows[0].idempotency_key == "rule:r1:7:0" and rows[0].value is None


def test_changes_apply_in_order_within_one_call(any_db: Database) -> None:
    pid = new_profile(any_db)
    outcomes = apply(
        any_db,
        change(pid, "tag", "welcome", "add"),
        change(pid, "tag", "welcome", "remove"),
        change(pid, "tag", "winback", "add"),
        change(pid, "tag", "winback", "add"),  # the first added it in this very call
        change(pid, "tag", "winback", "add", key="same"),
        change(pid, "tag", "other", "add", key="same"),  # a key twice in one call
    )
    assert [o["status"] for o in outcomes] == [
        "added",
        "removed",
        "added",
        "unchanged",
        "unchanged",
        "duplicate",
    ]
    assert labels(any_db, pid).tags == ("winback",)
    assert len(label_rows(any_db, [pid])) == 3


def test_segments_and_traits(any_db: Database) -> None:
    pid = new_profile(any_db)
    outcomes = apply(
        any_db,
        change(pid, "segment", "Lapsed.90d", "add"),
        change(pid, "segment", "big-spenders", "add"),
        change(pid, "segment", "lapsed.90d", "remove"),
        change(pid, "trait", "favourite_shop", "set", "Paris"),
        change(pid, "trait", "favourite_shop", "set", "Paris"),
        change(pid, "trait", "score", "set", 1),
        change(pid, "trait", "score", "set", 1.0),  # the same number
        change(pid, "trait", "ratio", "set", 2.5),
        change(pid, "trait", "flag", "set", 1),
        change(pid, "trait", "flag", "set", True),  # not the same as 1
        change(pid, "trait", "churned", "set", False),
        change(pid, "trait", "gone", "unset"),
    )
    assert [(o["status"], o.get("segment") or o.get("trait")) for o in outcomes] == [
        ("added", "lapsed.90d"),
        ("added", "big-spenders"),
        ("removed", "lapsed.90d"),
        ("set", "favourite_shop"),
        ("unchanged", "favourite_shop"),
        ("set", "score"),
        ("unchanged", "score"),
        ("set", "ratio"),
        ("set", "flag"),
        ("set", "flag"),
        ("set", "churned"),
        ("unchanged", "gone"),
    ]
    assert outcomes[3]["value"] == "Paris"
    now = labels(any_db, pid)
    assert now.segments == ("big-spenders",) and now.tags == ()
    assert now.traits == {
        "churned": False,
        "favourite_shop": "Paris",
        "score": 1,
        "ratio": 2.5,
        "flag": True,
    }
    assert [type(now.traits[n]) for n in ("score", "ratio", "flag")] == [int, float, bool]
    assert now.trait_sources == dict.fromkeys(now.traits, "rule:r1@1")
    [unset] = apply(any_db, change(pid, "trait", "score", "unset", source="api"))
    assert unset["status"] == "unset"
    assert "score" not in labels(any_db, pid).traits


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        ({"kind": "tag", "name": " ", "op": "add"}, "changes[1].tag"),
        ({"kind": "tag", "name": "no spaces", "op": "add"}, "changes[1].tag"),
        ({"kind": "segment", "name": "x" * 64, "op": "add"}, "changes[1].segment"),
        ({"kind": "tag", "name": "vip", "op": "set"}, "changes[1].op"),
        ({"kind": "tag", "name": "vip", "op": "add", "value": 3}, "changes[1].value"),
        ({"kind": "trait", "name": "1st", "op": "set", "value": 1}, "changes[1].name"),
        ({"kind": "trait", "name": "a", "op": "set", "value": {"x": 1}}, "changes[1].value"),
        ({"kind": "trait", "name": "a", "op": "set", "value": None}, "changes[1].value"),
        ({"kind": "trait", "name": "a", "op": "set", "value": float("nan")}, "changes[1].value"),
        ({"kind": "trait", "name": "a", "op": "set", "value": "x" * 1025}, "changes[1].value"),
        ({"kind": "badge", "name": "a", "op": "add"}, "changes[1].kind"),
    ],
)
def test_invalid_changes_are_refused_before_anything_is_written(
    sqlite_db: Database, bad: dict[str, Any], field: str
) -> None:
    pid = new_profile(sqlite_db)
    with pytest.raises(ValidationError) as caught:
        apply(sqlite_db, change(pid, "tag", "fine", "add"), change(pid, **bad))
    assert caught.value.field == field
    assert label_rows(sqlite_db, [pid]) == []


def test_an_unknown_profile_is_refused(sqlite_db: Database) -> None:
    with pytest.raises(UnknownProfile):
        apply(sqlite_db, change("prof_nobody", "tag", "vip", "add"))
    with sqlite_db.read() as session, pytest.raises(UnknownProfile):
        labels_of_profile(session, WS, "prof_nobody")


def test_rule_actions_map_to_changes() -> None:
    made = change_for_action(
        "set_trait",
        {"name": "tier_hint", "value": "gold"},
        profile_id="p1",
        source="rule:r2@3",
        key="rule:r2:9:1",
        event_id=9,
    )
    assert (made.kind, made.name, made.op, made.value, made.event_id) == (
        "trait",
        "tier_hint",
        "set",
        "gold",
        9,
    )
    exit_ = change_for_action(
        "exit_segment", {"segment": "Lapsed"}, profile_id="p1", source="s", key="k"
    )
    assert (exit_.kind, exit_.name, exit_.op) == ("segment", "lapsed", "remove")
    with pytest.raises(ValidationError) as caught:
        change_for_action("add_tag", {"tag": "a b"}, profile_id="p1", source="s", key="k")
    assert caught.value.field == "tag"
    with pytest.raises(ValidationError):
        change_for_action("send_email", {}, profile_id="p1", source="s", key="k")


def test_every_real_change_is_on_the_change_feed(any_db: Database) -> None:
    pid = new_profile(any_db)
    apply(
        any_db,
        change(pid, "tag", "vip", "add", event_id=41),
        change(pid, "tag", "vip", "add"),  # unchanged: not fed
        change(pid, "segment", "lapsed", "add"),
        change(pid, "segment", "lapsed", "remove"),
        change(pid, "trait", "shop", "set", "Paris"),
        change(pid, "trait", "shop", "set", "Lyon"),
        change(pid, "trait", "shop", "unset"),
        change(pid, "tag", "vip", "remove"),
    )
    source = {"source": "rule:r1@1", "event_id": None}
    assert feed(any_db, pid) == [
        ("profile.tag_added", {"tag": "vip", "source": "rule:r1@1", "event_id": 41}),
        ("profile.segment_entered", {"segment": "lapsed", **source}),
        ("profile.segment_exited", {"segment": "lapsed", **source}),
        ("profile.trait_set", {"trait": "shop", "value": "Paris", "previous": None, **source}),
        ("profile.trait_set", {"trait": "shop", "value": "Lyon", "previous": "Paris", **source}),
        ("profile.trait_unset", {"trait": "shop", "previous": "Lyon", **source}),
        ("profile.tag_removed", {"tag": "vip", **source}),
    ]


def test_a_merged_away_profiles_labels_count_for_its_survivor(any_db: Database) -> None:
    anon, user = f"a-{uuid.uuid4().hex[:10]}", f"u-{uuid.uuid4().hex[:10]}"
    run(any_db, [ev(0, anonymous_id=anon)], [ev(1, user_id=user)])
    old, kept = (
        profile_holding(any_db, "anonymous_id", anon),
        profile_holding(any_db, "user_id", user),
    )
    assert old != kept
    apply(
        any_db,
        change(old, "tag", "browsed-shoes", "add"),
        change(old, "trait", "size", "set", 38),
        change(kept, "tag", "member", "add"),
        change(kept, "trait", "size", "set", 39),  # later (higher id): wins after the merge
    )
    run(any_db, [ev(2, anonymous_id=anon, user_id=user)])
    survivor = profile_holding(any_db, "user_id", user)
    merged_away = old if survivor == kept else kept
    with any_db.read() as session:
        both = labels_of(session, WS, [survivor])
    assert both[survivor].tags == ("browsed-shoes", "member")
    assert both[survivor].traits == {"size": 39}
    assert labels(any_db, merged_away) == both[survivor]  # an old id answers for its survivor
    # a change naming the merged-away id sees the whole person and goes to the survivor
    outcomes = apply(
        any_db,
        change(merged_away, "tag", "browsed-shoes", "add"),
        change(merged_away, "tag", "browsed-shoes", "remove"),
    )
    assert [o["status"] for o in outcomes] == ["unchanged", "removed"]
    assert {o["profile_id"] for o in outcomes} == {survivor}
    assert labels(any_db, survivor).tags == ("member",)
    assert label_rows(any_db, [survivor])[-1].name == "browsed-shoes"


def test_labels_survive_an_unmerge_replay(any_db: Database) -> None:
    """Event-derived traits are rebuilt from events; labels are not derived from them."""
    t = uuid.uuid4().hex[:8]
    email, phone = f"ann-{t}@example.com", "+14155550179"
    run(any_db, [ev(0, traits={"city": "Paris"}, email=email)], [ev(1, phone=phone)])
    run(any_db, [ev(2, email=email, phone=phone)])
    pid = profile_holding(any_db, "email", email)
    apply(any_db, change(pid, "tag", "vip", "add"), change(pid, "trait", "city", "set", "Rome"))
    with any_db.write() as session:
        unmerge(session, WS, pid, identifier=("phone", phone), config=CONFIG)
    assert profile_holding(any_db, "email", email) == pid  # the kept part keeps the id
    assert labels(any_db, pid) == Labels(
        tags=("vip",), traits={"city": "Rome"}, trait_sources={"city": "rule:r1@1"}
    )


def test_many_changes_take_a_few_statements(any_db: Database) -> None:
    profiles = [new_profile(any_db) for _ in range(5)]
    changes = [
        change(profiles[i % 5], "tag", f"t{i % 40}", "add" if i % 3 else "remove")
        for i in range(300)
    ]
    changes += [change(pid, "trait", "n", "set", i) for i, pid in enumerate(profiles)]
    with counting(any_db) as statements:
        outcomes = apply(any_db, *changes)
    assert len(outcomes) == len(changes)
    assert len(statements) <= 10, statements
    with any_db.read() as session, counting(any_db) as reads:
        found = labels_of(session, WS, profiles)
    assert len(reads) <= 4, reads
    assert [found[pid].traits for pid in profiles] == [{"n": i} for i in range(5)]
    assert all(found[pid].tags for pid in profiles)


class Admin:
    """The real API app in process (httpx's ASGI transport), with the admin token."""

    def __init__(self, db: Database, home: Path) -> None:
        settings = load_settings({"ECRM_HOME": str(home), "ECRM_ADMIN_TOKEN": ADMIN_TOKEN})
        self.transport = httpx.ASGITransport(create_app(Runtime(settings=settings, db=db)))

    def call(self, method: str, path: str, token: str = ADMIN_TOKEN, **kw: Any) -> httpx.Response:
        async def send() -> httpx.Response:
            async with httpx.AsyncClient(
                transport=self.transport,
                base_url="http://testserver",
                headers={"Authorization": f"Bearer {token}"},
            ) as client:
                return await client.request(method, path, **kw)

        return asyncio.run(send())


def test_the_profile_api_shows_labels_and_changes_tags(any_db: Database, tmp_path: Path) -> None:
    pid = new_profile(any_db, city="Paris", first_name="Ann")
    admin = Admin(any_db, tmp_path)
    before = admin.call("GET", f"/v1/profiles/{pid}").json()
    assert before["traits"] == {"city": "Paris", "first_name": "Ann"}
    assert (before["tags"], before["segments"], before["label_traits"]) == ([], [], {})
    apply(
        any_db,
        change(pid, "tag", "vip", "add"),
        change(pid, "segment", "lapsed", "add"),
        change(pid, "trait", "city", "set", "Rome"),  # the rule-set value wins
        change(pid, "trait", "shop", "set", "P1"),
    )
    after = admin.call("GET", f"/v1/profiles/{pid}").json()
    assert after["traits"] == {"city": "Rome", "first_name": "Ann", "shop": "P1"}
    assert after["tags"] == ["vip"] and after["segments"] == ["lapsed"]
    assert after["label_traits"] == {"city": "rule:r1@1", "shop": "rule:r1@1"}
    for name, value in before.items():  # every other field exactly as it was
        if name not in ("traits", "updated_at", "tags", "segments", "label_traits"):
            assert after[name] == value, name
    user = before["identifiers"][0]["value"]
    found = admin.call("GET", "/v1/profiles", params={"identifier": f"user_id:{user}"}).json()
    assert found["tags"] == ["vip"] and found["traits"]["city"] == "Rome"

    put = admin.call("PUT", f"/v1/profiles/{pid}/tags/Gold", headers={"Idempotency-Key": "op-1"})
    assert put.status_code == 200, put.text
    assert put.json()["outcome"]["status"] == "added" and put.json()["tags"] == ["gold", "vip"]
    retried = admin.call(
        "PUT", f"/v1/profiles/{pid}/tags/gold", headers={"Idempotency-Key": "op-1"}
    )
    assert retried.json()["outcome"]["status"] == "duplicate"
    removed = admin.call("DELETE", f"/v1/profiles/{pid}/tags/vip")
    assert removed.json()["outcome"]["status"] == "removed" and removed.json()["tags"] == ["gold"]
    exited = admin.call("DELETE", f"/v1/profiles/{pid}/segments/lapsed")
    assert exited.json()["segments"] == []
    shown = admin.call("GET", f"/v1/profiles/{pid}/labels").json()
    assert shown == {
        "profile_id": pid,
        "tags": ["gold"],
        "segments": [],
        "traits": {"city": "Rome", "shop": "P1"},
        "trait_sources": {"city": "rule:r1@1", "shop": "rule:r1@1"},
    }
    assert label_rows(any_db, [pid])[-3].source == "api"

    bad = admin.call("PUT", f"/v1/profiles/{pid}/tags/no%20spaces")
    assert bad.status_code == 400 and bad.json()["field"] == "tag"
    missing = admin.call("PUT", "/v1/profiles/prof_nobody/tags/vip")
    assert missing.status_code == 404 and missing.json()["field"] == "profile_id"
    assert admin.call("GET", "/v1/profiles/prof_nobody/labels").status_code == 404
    assert admin.call("GET", f"/v1/profiles/{pid}/labels", token="wrong").status_code == 401
    assert admin.call("PUT", f"/v1/profiles/{pid}/tags/vip", token="wrong").status_code == 401


def test_export_holds_the_labels_and_erasure_removes_them(any_db: Database) -> None:
    t = uuid.uuid4().hex[:10]
    anon, user = f"a-{t}", f"u-{t}"
    run(any_db, [ev(0, anonymous_id=anon)], [ev(1, user_id=user)])
    old, kept = (
        profile_holding(any_db, "anonymous_id", anon),
        profile_holding(any_db, "user_id", user),
    )
    secret = f"Pregnancy-{t}"
    apply(
        any_db,
        change(old, "tag", f"expecting-{t}", "add"),
        change(kept, "trait", "note", "set", secret),
        change(kept, "segment", "baby", "add"),
    )
    run(any_db, [ev(2, anonymous_id=anon, user_id=user)])
    survivor = profile_holding(any_db, "user_id", user)
    other = new_profile(any_db)
    apply(any_db, change(other, "tag", "vip", "add"))

    with any_db.read() as session:
        person = find_person(session, WS, survivor)
        assert person is not None
        document = orjson.loads(b"".join(export_chunks(session, person, SECTIONS)))
    section = document["labels"]
    assert section["current"] == {
        "tags": [f"expecting-{t}"],
        "segments": ["baby"],
        "traits": {"note": secret},
        "trait_sources": {"note": "rule:r1@1"},
    }
    assert [(r["profile_id"], r["kind"]) for r in section["history"]] == [
        (old, "tag"),
        (kept, "trait"),
        (kept, "segment"),
    ]

    with any_db.write() as session:
        result = erase_profile(session, WS, survivor, key=KEY, also=ERASERS)
    assert result.counts["labels"] == 3 and result.counts["label_changes"] == 3
    assert labels(any_db, survivor) == Labels()
    assert label_rows(any_db, [old, kept]) == []
    assert labels(any_db, other).tags == ("vip",)  # someone else is left alone
    with any_db.read() as session:
        texts = [json.dumps(row.data) for row in session.execute(select(CHANGES)).all()]
    assert not [text for text in texts if secret in text or f"expecting-{t}" in text]
    erased = feed(any_db, old) + feed(any_db, kept)
    assert [data for _, data in erased] == [{"erased": True}] * 3
    with any_db.write() as session:  # erasing again: nothing more to do
        again = erase_profile(session, WS, survivor, key=KEY, also=ERASERS)
    assert again.erasure_id is None and not any(again.counts.values())


@pytest.mark.parametrize("url_fixture", ["sqlite_url", "postgres_url"])
def test_the_migration_creates_the_table_and_goes_back(
    url_fixture: str, request: pytest.FixtureRequest
) -> None:
    db = Database.connect(request.getfixturevalue(url_fixture))
    try:
        upgrade(db)
        with db.engine.connect() as conn:
            found = inspect(conn)
            columns = {c["name"] for c in found.get_columns("profile_labels")}
            indexes = {i["name"] for i in found.get_indexes("profile_labels")}
        assert columns == {c.name for c in LABELS.columns}
        assert "ix_profile_labels_profile" in indexes
        downgrade(db, "0012")
        with db.engine.connect() as conn:
            assert not inspect(conn).has_table("profile_labels")
        upgrade(db)
        with db.write() as session:  # usable after going back and forth
            pid = f"prof_{uuid.uuid4().hex[:20]}"
            session.execute(
                PROFILES.insert(),
                {
                    "id": pid,
                    "workspace_id": WS,
                    "traits": {},
                    "trait_times": {},
                    "first_seen_at": T0,
                    "last_seen_at": T0,
                    "event_count": 0,
                    "created_at": T0,
                    "updated_at": T0,
                },
            )
            [outcome] = apply_label_changes(session, WS, [change(pid, "tag", "vip", "add")], now=T0)
        assert outcome["status"] == "added"
    finally:
        db.dispose()
