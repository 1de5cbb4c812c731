"""Dry run of an identity configuration on real SQLite and PostgreSQL: the log is replayed
under the new configuration, merges and splits are reported with examples, and the hub's
database is left exactly as it was."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import inspect, text

from identity.config import IdentityConfig
from identity.models import SPLIT_MEMBERS, SPLITS
from identity.simulate import SimulationError, _snapshot, simulate
from identity.simulate_report import Cluster, SimulationReport
from identity.views import event_views, set_sharing
from pipeline import Database, ingest, utcnow
from pipeline.events import get_event
from pipeline.outbox import relay
from workers.processing import process_batches

T0 = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
WS = "default"
LOOSE = IdentityConfig.from_mapping({"limits": {"customer_id": 2}})
STRICT = IdentityConfig()  # the default: one customer id per profile


def ev(minute: int, channel: str = "pos", **ids: str) -> dict[str, Any]:
    return {
        "message_id": f"sim-{uuid.uuid4().hex}",
        "channel": channel,
        "type": "order.completed" if channel == "pos" else "page.viewed",
        "occurred_at": T0 + timedelta(minutes=minute),
        "identifiers": ids,
        "traits": {},
    }


def ingest_only(db: Database, items: list[dict[str, Any]]) -> None:
    with db.write() as session:
        results = ingest(session, items, workspace_id=WS, default_region="US")
    assert {r.status for r in results} == {"accepted"}, [r.reason for r in results]


def run(db: Database, *batches: list[dict[str, Any]], config: IdentityConfig) -> None:
    """Ingest each list as one transaction and process it before the next (as the hub)."""
    for items in batches:
        ingest_only(db, items)
        published: list[list[int]] = []
        relay(db, published.append, batch_size=500, lease_seconds=60)
        for message in published:
            process_batches(db, message, config)


def profile_of(db: Database, item: dict[str, Any]) -> str | None:
    with db.read() as session:
        record = get_event(session, WS, item["message_id"])
        assert record is not None
        found = event_views(session, WS, [record])[0]["profile_id"]
    return str(found) if found else None


def contents(db: Database) -> dict[str, list[str]]:
    """Every row of every table, as text: equal before and after means nothing was written."""
    names = sorted(inspect(db.engine).get_table_names())
    with db.read() as session:
        return {
            name: sorted(
                repr(tuple(row)) for row in session.execute(text(f'SELECT * FROM "{name}"'))
            )
            for name in names
        }


def phone() -> str:
    return "+1415555" + str(uuid.uuid4().int % 10000).zfill(4)


def family(db: Database, config: IdentityConfig) -> dict[str, Any]:
    """Ann and Bob share the family phone; Carl is alone. Processed under ``config``."""
    tel = phone()
    items = {
        "ann": ev(0, customer_id="C1", phone=tel),
        "bob": ev(1, customer_id="C2", phone=tel),
        "bob_web": ev(2, "web", customer_id="C2", email="bob@example.com"),
        "carl": ev(3, "web", email="carl@example.com"),
        "carl_again": ev(4, "web", email="carl@example.com", anonymous_id="anon-carl"),
    }
    run(
        db,
        [items["ann"]],
        [items["bob"]],
        [items["bob_web"]],
        [items["carl"], items["carl_again"]],
        config=config,
    )
    return {"phone": tel, **items}


def dry_run(db: Database, new: IdentityConfig, **options: Any) -> SimulationReport:
    before = contents(db)
    report = simulate(db, WS, new, **{"current_config": STRICT, **options})
    assert contents(db) == before  # not one row written, updated or deleted
    return report


def counts(report: SimulationReport) -> dict[str, Any]:
    return {
        name: getattr(report, name)
        for name in (
            "events",
            "unprocessed",
            "failed",
            "profiles_before",
            "profiles_after",
            "merges",
            "merged_profiles",
            "splits",
            "split_parts",
            "moved_events",
            "joined_events",
            "left_events",
            "conflicts_before",
            "conflicts_after",
        )
    }


def test_a_strict_limit_splits_what_a_loose_one_joined(any_db: Database) -> None:
    f = family(any_db, LOOSE)
    joined = profile_of(any_db, f["ann"])
    assert joined == profile_of(any_db, f["bob"]) == profile_of(any_db, f["bob_web"])
    carl = profile_of(any_db, f["carl"])

    report = dry_run(any_db, STRICT, current_config=LOOSE)

    assert counts(report) == {
        "events": 5,
        "unprocessed": 0,
        "failed": 0,
        "profiles_before": 2,
        "profiles_after": 3,
        "merges": 0,
        "merged_profiles": 0,
        "splits": 1,
        "split_parts": 2,
        "moved_events": 1,  # Ann's order leaves the profile Bob's two events keep
        "joined_events": 0,
        "left_events": 0,
        "conflicts_before": {},
        "conflicts_after": {"distinct_person": 1},
    }
    assert report.baseline == "current" and report.merge_examples == ()
    [example] = report.split_examples
    assert example.profile == Cluster(
        joined or "",
        (joined or "",),
        3,
        ("customer_id:C1", "customer_id:C2", "email:bob@example.com", f"phone:{f['phone']}"),
    )
    assert [(p.now, p.events, p.identifiers) for p in example.parts] == [
        ((joined,), 2, ("customer_id:C2", "email:bob@example.com")),
        ((joined,), 1, ("customer_id:C1", f"phone:{f['phone']}")),
    ]
    assert example.conflicts == (
        {
            "event": f["bob"]["message_id"],
            "reason": "distinct_person",
            "kind": "customer_id",
            "identifiers": ["customer_id:C2", f"phone:{f['phone']}"],
        },
    )
    assert example.dropped == ()
    assert carl not in {c for p in example.parts for c in p.now}
    assert report.events_per_second > 0


@pytest.mark.parametrize("baseline", ["current", "replay"])
def test_raising_a_limit_merges_the_family_and_says_which_event_joins_it(
    any_db: Database, baseline: str
) -> None:
    f = family(any_db, STRICT)
    ann, bob = profile_of(any_db, f["ann"]), profile_of(any_db, f["bob"])
    assert ann and bob and ann != bob

    report = dry_run(any_db, LOOSE, baseline=baseline)

    assert counts(report) == {
        "events": 5,
        "unprocessed": 0,
        "failed": 0,
        "profiles_before": 3,
        "profiles_after": 2,
        "merges": 1,
        "merged_profiles": 2,
        "splits": 0,
        "split_parts": 0,
        "moved_events": 1,
        "joined_events": 0,
        "left_events": 0,
        "conflicts_before": {"distinct_person": 1},
        "conflicts_after": {},
    }
    assert report.baseline == baseline
    [example] = report.merge_examples
    assert [(p.now, p.events, p.identifiers) for p in example.profiles] == [
        ((bob,), 2, ("customer_id:C2", "email:bob@example.com")),
        ((ann,), 1, ("customer_id:C1", f"phone:{f['phone']}")),
    ]
    if baseline == "current":  # today's ids; a replayed baseline has ids of its own
        assert [p.profile_id for p in example.profiles] == [bob, ann]
    assert example.into.now == (ann, bob) or example.into.now == tuple(sorted((ann, bob)))
    assert example.into.events == 3
    assert example.into.identifiers == (
        "customer_id:C1",
        "customer_id:C2",
        "email:bob@example.com",
        f"phone:{f['phone']}",
    )
    assert example.links == (
        {
            "event": f["bob"]["message_id"],
            "rule": "attached",
            "identifiers": ["customer_id:C2", f"phone:{f['phone']}"],
        },
    )


def test_the_same_configuration_changes_nothing(any_db: Database) -> None:
    family(any_db, STRICT)
    for baseline in ("current", "replay"):
        report = dry_run(any_db, STRICT, baseline=baseline)
        assert (report.merges, report.splits, report.moved_events) == (0, 0, 0)
        assert (report.profiles_before, report.profiles_after) == (3, 3)
        assert report.conflicts_before == report.conflicts_after == {"distinct_person": 1}


def walk_in(db: Database, *, allow_after_first: bool = False) -> dict[str, Any]:
    """Three customers swipe the shop's walk-in card; then the card alone."""
    card = f"WALKIN-{uuid.uuid4().hex[:8]}"
    people = [ev(i, customer_id=f"C{i}", loyalty_card=card) for i in range(3)]
    run(db, [people[0]], config=STRICT)
    if allow_after_first:
        with db.write() as session:
            assert set_sharing(session, WS, "loyalty_card", card, shared=False)
    run(db, [people[1]], [people[2]], config=STRICT)
    alone = ev(5, loyalty_card=card)
    run(db, [alone], config=STRICT)
    return {"card": card, "people": people, "alone": alone}


def test_a_higher_shared_after_unflags_the_walk_in_card(any_db: Database) -> None:
    w = walk_in(any_db)
    assert profile_of(any_db, w["alone"]) is None  # flagged: the card alone is nobody

    # one event at a time, as the hub resolved them: the same configuration reproduces it
    same = dry_run(any_db, STRICT, batch_size=1)
    assert (same.merges, same.splits, same.moved_events, same.joined_events) == (0, 0, 0, 0)
    assert (same.shared_before, same.shared_after) == (1, 1)
    assert same.seeded == {
        "allowed": 0,
        "shared": 0,
        "shared_detected": 1,
        "splits": 0,
        "tombstones": 0,
    }

    report = dry_run(any_db, IdentityConfig.from_mapping({"shared_after": 5}), batch_size=1)
    assert (report.merges, report.splits, report.moved_events) == (0, 0, 0)
    assert (report.joined_events, report.left_events) == (1, 0)  # the card alone: the owner's
    assert (report.profiles_before, report.profiles_after) == (3, 3)
    assert (report.shared_before, report.shared_after) == (1, 0)
    assert report.no_longer_shared == (f"loyalty_card:{w['card']}",)
    assert report.newly_shared == ()


def test_an_operators_allowed_identifier_stays_allowed_in_the_replay(any_db: Database) -> None:
    w = walk_in(any_db, allow_after_first=True)
    owner = profile_of(any_db, w["people"][0])
    assert profile_of(any_db, w["alone"]) == owner  # never flagged: the operator said so

    report = dry_run(any_db, STRICT, batch_size=1)
    assert report.seeded == {
        "allowed": 1,
        "shared": 0,
        "shared_detected": 0,
        "splits": 0,
        "tombstones": 0,
    }
    # without the decision the replay would flag the card and drop the lone swipe
    assert (report.joined_events, report.left_events, report.moved_events) == (0, 0, 0)
    assert (report.shared_before, report.shared_after) == (0, 0)


def test_an_operators_shared_flag_holds_from_the_identifiers_first_event(
    any_db: Database,
) -> None:
    tel = phone()
    ann = ev(0, customer_id="C1", phone=tel)
    form = ev(1, "web", email="ann.form@example.com", phone=tel)
    run(any_db, [ann], [form], config=STRICT)
    profile = profile_of(any_db, ann)
    assert profile == profile_of(any_db, form)  # the phone joined them
    with any_db.write() as session:
        assert set_sharing(session, WS, "phone", tel, shared=True)

    report = dry_run(any_db, STRICT)
    assert report.seeded == {
        "allowed": 0,
        "shared": 1,
        "shared_detected": 0,
        "splits": 0,
        "tombstones": 0,
    }
    assert (report.splits, report.split_parts, report.profiles_after) == (1, 2, 2)
    [example] = report.split_examples
    assert [p.identifiers for p in example.parts] == [
        ("customer_id:C1",),
        ("email:ann.form@example.com",),
    ]
    assert example.dropped == (f"phone:{tel} (shared)",)
    assert (report.shared_before, report.shared_after) == (1, 1)


def test_an_unmerge_rule_is_replayed(any_db: Database) -> None:
    tel = phone()
    ann = ev(0, customer_id="C1", phone=tel)
    form = ev(1, "web", email="ann.form@example.com", phone=tel)
    run(any_db, [ann], [form], config=STRICT)
    profile = profile_of(any_db, ann)
    with any_db.write() as session:  # the rows an unmerge of the phone leaves
        split_id = session.execute(
            SPLITS.insert().returning(SPLITS.c.id),
            {
                "workspace_id": WS,
                "profile_id": profile,
                "mode": "identifier",
                "target": f"phone:{tel}",
                "result": {},
                "created_at": utcnow(),
            },
        ).scalar_one()
        session.execute(
            SPLIT_MEMBERS.insert(),
            [
                {"split_id": split_id, "workspace_id": WS, "side": side, "kind": k, "value": v}
                for side, k, v in [
                    ("a", "phone", tel),
                    ("b", "customer_id", "C1"),
                    ("b", "email", "ann.form@example.com"),
                ]
            ],
        )
    report = dry_run(any_db, STRICT)
    assert report.seeded["splits"] == 1
    assert (report.splits, report.profiles_before, report.profiles_after) == (1, 1, 2)
    assert "kept_apart" in report.conflicts_after


def test_events_the_hub_has_not_processed_are_replayed_but_not_compared(
    any_db: Database,
) -> None:
    tel = phone()
    ann = ev(0, customer_id="C1", phone=tel)
    run(any_db, [ann], config=STRICT)
    ingest_only(any_db, [ev(1, customer_id="C9", email="late@example.com")])  # still queued

    report = dry_run(any_db, STRICT)
    assert (report.events, report.unprocessed) == (2, 1)
    assert (report.profiles_before, report.profiles_after) == (1, 1)
    assert (report.joined_events, report.merges, report.splits) == (0, 0, 0)


def test_the_hubs_database_is_read_in_a_read_only_transaction(any_db: Database) -> None:
    with _snapshot(any_db) as session, pytest.raises(Exception) as caught:
        session.execute(text("UPDATE workspaces SET name = 'x'"))
    assert "read" in str(caught.value).lower()  # read-only transaction / readonly database
    with any_db.write() as session:  # the pooled connection writes again afterwards
        session.execute(text("UPDATE workspaces SET name = name"))


def test_an_unknown_workspace_is_refused(sqlite_db: Database) -> None:
    with pytest.raises(SimulationError, match="no workspace 'nope'"):
        simulate(sqlite_db, "nope", STRICT, current_config=STRICT)


def cli(home: Path, url: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("ECRM_")}
    environment.update(
        ECRM_HOME=str(home),
        ECRM_DATABASE_URL=url,
        ECRM_WRITE_KEYS="wk_test_0123456789",
        ECRM_ADMIN_TOKEN="adm_test_0123456789abcdef",
        ECRM_LOG_LEVEL="WARNING",
        **env,
    )
    return subprocess.run(
        [sys.executable, "-m", "workers.cli", "identity", "simulate", *args],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_command_reports_in_words_and_json(
    sqlite_db: Database, sqlite_url: str, tmp_path: Path
) -> None:
    f = family(sqlite_db, LOOSE)
    joined = profile_of(sqlite_db, f["ann"])
    (tmp_path / "loose.yaml").write_text("limits: {customer_id: 2}\n")
    (tmp_path / "strict.yaml").write_text("limits: {customer_id: 1}\n")
    before = contents(sqlite_db)
    loose = str(tmp_path / "loose.yaml")

    done = cli(
        tmp_path, sqlite_url, "--config", str(tmp_path / "strict.yaml"), ECRM_IDENTITY_CONFIG=loose
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("Replayed 5 events in ")
    assert "events/s) under " in lines[0] and "nothing was written" in lines[0]
    assert lines[1] == (
        f"Baseline: today's profiles in the database (current configuration:"
        f" ECRM_IDENTITY_CONFIG={loose})."
    )
    assert f"Profiles: 2 now -> 3 under {tmp_path / 'strict.yaml'}" in lines
    assert "Merges: 0" in lines and "Splits: 1 (1 profile into 2)" in lines
    assert "Conflicts: distinct_person 0 -> 1" in lines
    split = lines.index("Splits, largest first:")
    assert lines[split + 1] == (
        f"  * {joined} (3 events: customer_id:C1, customer_id:C2, email:bob@example.com,"
        f" phone:{f['phone']}) -> 2 profiles:"
    )
    assert lines[split + 2] == "      (2 events: customer_id:C2, email:bob@example.com)"
    assert lines[split + 4] == (
        f"      distinct_person (customer_id) at event {f['bob']['message_id']}:"
        f" customer_id:C2, phone:{f['phone']}"
    )

    done = cli(
        tmp_path,
        sqlite_url,
        "--config",
        str(tmp_path / "strict.yaml"),
        "--baseline",
        "replay",
        "--json",
        ECRM_IDENTITY_CONFIG=loose,
    )
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert (data["baseline"], data["splits"], data["profiles_after"]) == ("replay", 1, 3)
    assert data["current_config"] == loose and data["events_per_second"] > 0
    assert data["split_examples"][0]["profile"]["now"] == [joined]
    assert contents(sqlite_db) == before


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read"),
        ("limits: [oops\n", "not YAML"),
        ("limits: {email: 0}\n", "limits: Value error, email: a limit is at least 1"),
        ("matching: {upper: 0.5, lower: 0.9}\n", "matching"),
    ],
)
def test_bad_input_is_one_line_and_exit_status_2(
    sqlite_db: Database, sqlite_url: str, tmp_path: Path, content: str | None, message: str
) -> None:
    path = tmp_path / "new.yaml"
    if content is not None:
        path.write_text(content)
    done = cli(tmp_path, sqlite_url, "--config", str(path))
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert done.stderr.startswith(f"ecrm: {path}: ") and message in done.stderr


def test_an_unknown_workspace_is_one_line_and_exit_status_2(
    sqlite_db: Database, sqlite_url: str, tmp_path: Path
) -> None:
    (tmp_path / "new.yaml").write_text("shared_after: 3\n")
    done = cli(tmp_path, sqlite_url, "--config", str(tmp_path / "new.yaml"), "--workspace", "nope")
    assert (done.returncode, done.stderr) == (2, "ecrm: no workspace 'nope'\n")
