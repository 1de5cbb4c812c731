"""``ecrm import calls``: call-detail records into real SQLite and PostgreSQL databases.

Covers the Asterisk sample end to end (events, skipped internal calls, re-import as
duplicates), the reject file's line numbers, resuming after an interruption without
duplicates, and a call joining the profile that a web event built for the same phone.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from file_imports import events, import_into, interrupt_at, rejects

from connectors.calls import ImportInterrupted, ImportSummary, import_calls_file, load_mapping
from identity.views import find_profile_id, profile_view
from pipeline import Database, HubError, ingest
from pipeline.outbox import relay
from workers.processing import process_batches

SAMPLE = Path(__file__).parents[1] / "data" / "calls" / "Master.csv"
GENERIC_HEADER = "call_id,direction,from,to,started_at,ended_at,duration,disposition,agent"


def run(db: Database, path: Path, state: Path, **options: Any) -> ImportSummary:
    options.setdefault("mapping", load_mapping("asterisk"))
    return import_into(import_calls_file, db, path, state, **options)


def tagged_sample(tmp_path: Path, tag: str) -> Path:
    """The shipped sample with unique call ids (tests share PostgreSQL databases)."""
    path = tmp_path / "Master.csv"
    path.write_text(SAMPLE.read_text().replace('"17724', f'"{tag}-17724'))
    return path


def test_asterisk_sample_imports_skips_internal_calls_and_reimports_as_duplicates(
    any_db: Database, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:8]
    path = tagged_sample(tmp_path, tag)
    summary = run(any_db, path, tmp_path / "state")
    assert (summary.rows, summary.units, summary.imported) == (10, 10, 8)
    assert (summary.skipped, summary.rejected, summary.duplicates) == (2, 0, 0)
    assert summary.skip_reasons == {"internal call (both ends are extensions)": 2}
    assert summary.unit == "calls" and summary.rejects_path is None
    stored = events(any_db, f"call:asterisk:{tag}-")
    assert len(stored) == 8
    assert {(e.channel, e.type, e.source) for e in stored.values()} == {
        ("call", "call.completed", "calls-import")
    }
    queue_call = next(
        e
        for e in stored.values()
        if e.properties.get("queue") == "sales" and e.properties["disposition"] == "answered"
    )
    assert queue_call.identifiers == {"phone": "+14155550123"}
    assert queue_call.traits == {"caller_name": "Smith, Alice"}
    assert queue_call.occurred_at == datetime(2026, 3, 2, 9, 15, 2, tzinfo=UTC)  # mapping: UTC
    assert queue_call.context == {"import": {"mapping": "asterisk", "file": "Master.csv"}}
    ring_group = [
        e for e in stored.values() if e.properties.get("call_id") == f"{tag}-1772443800.107"
    ]
    assert sorted(e.properties["disposition"] for e in ring_group) == ["answered", "no-answer"]
    outbound = [
        e.identifiers["phone"] for e in stored.values() if e.properties["direction"] == "outbound"
    ]
    assert sorted(outbound) == ["+14155550126", "+14155550198", "+14155550199"]
    again = run(any_db, path, tmp_path / "state", restart=True)
    assert (again.imported, again.duplicates, again.skipped) == (0, 8, 2)
    assert len(events(any_db, f"call:asterisk:{tag}-")) == 8
    done = run(any_db, path, tmp_path / "state")  # complete: nothing read again
    assert (done.rows, done.imported, done.resumed_after) == (0, 0, 10)
    assert not done.nothing_imported
    # read again in another zone (fixing a wrong --timezone): the same calls, not new ones
    paris = load_mapping("asterisk").model_copy(update={"timezone": "Europe/Paris"})
    rezoned = run(any_db, path, tmp_path / "state", mapping=paris)
    assert (rezoned.rows, rezoned.imported, rezoned.duplicates) == (10, 0, 8)
    assert len(events(any_db, f"call:asterisk:{tag}-")) == 8


def test_reject_file_has_line_numbers_fields_and_reasons(
    sqlite_db: Database, tmp_path: Path
) -> None:
    lines = [
        GENERIC_HEADER,
        "R1,in,4155550123,310,2026-03-02T09:00:00Z,,30,answered,310",  # line 2: fine
        'R2,in,4155550123,310,2026-03-02T09:01:00Z,,30,"answered',  # 3-4: unclosed quote...
        'still the same record",310',
        "R3,in,4155550123,310,yesterday,,30,answered,310",  # line 5: bad time
        "R4,in,12ab,310,2026-03-02T09:03:00Z,,30,answered,310",  # line 6: no phone
        "R5,out,310,4155550124,2026-03-02T09:04:00Z,,thirty,answered,310",  # line 7
        "R6,in,4155550123,310,2026-03-02T09:05:00Z,,30,hung up,310",  # line 8
        "R7,,310,311,2026-03-02T09:06:00Z,,30,answered,310",  # line 9: internal, skipped
        "R8,in,4155550125,310,2026-03-02T09:07:00Z,2026-03-02T09:08:00Z,,,",  # line 10: fine
    ]
    path = tmp_path / "calls.csv"
    path.write_text("\n".join(lines) + "\n")
    target = tmp_path / "refused.csv"
    summary = run(
        sqlite_db, path, tmp_path / "state", mapping=load_mapping("generic"), rejects_path=target
    )
    assert (summary.rows, summary.imported, summary.skipped, summary.rejected) == (8, 2, 1, 5)
    assert summary.rejects_path == target
    assert [(r["line"], r["field"]) for r in rejects(target)] == [
        ("3", "disposition"),
        ("5", "started_at"),
        ("6", "from"),
        ("7", "duration"),
        ("8", "disposition"),
    ]
    assert "12ab" not in target.read_text() and "yesterday" not in target.read_text()
    stored = events(sqlite_db, "call:generic:R")
    assert set(stored) == {"call:generic:R1", "call:generic:R8"}
    assert stored["call:generic:R8"].properties["duration"] == 60


def test_resume_after_interruption_imports_each_call_once(any_db: Database, tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:8]
    start = datetime(2026, 3, 2, 8, tzinfo=UTC)
    rows = [GENERIC_HEADER]
    for n in range(1200):
        at = (start + timedelta(seconds=30 * n)).isoformat()
        rows.append(f"{tag}-{n},inbound,+1415555{n % 10000:04d},300,{at},,{n % 300},answered,301")
    rows.append(f"{tag}-bad,inbound,+14155550000,300,not a time,,1,answered,301")
    path = tmp_path / "big.csv"
    path.write_text("\n".join(rows) + "\n")
    state = tmp_path / "state"
    generic = load_mapping("generic")
    with pytest.raises(ImportInterrupted) as caught:
        run(any_db, path, state, mapping=generic, chunk_size=100, on_progress=interrupt_at(3))
    first = caught.value.summary
    assert first.imported == 300 and first.done_line == 301
    assert len(events(any_db, f"call:generic:{tag}-")) == 300
    second = run(any_db, path, state, mapping=generic, chunk_size=100)
    assert second.resumed_after == 301 and second.rows == 901
    assert (second.imported, second.duplicates, second.rejected) == (900, 0, 1)
    assert len(events(any_db, f"call:generic:{tag}-")) == 1200
    assert second.rejects_path is not None
    assert [(r["line"], r["field"]) for r in rejects(second.rejects_path)] == [
        ("1202", "started_at")
    ]


def test_a_call_joins_the_profile_of_the_same_phone_from_another_channel(
    any_db: Database, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:8]
    phone = f"+1415{uuid.uuid4().int % 10_000_000:07d}"
    national = f"({phone[2:5]}) {phone[5:8]}-{phone[8:]}"
    with any_db.write() as session:
        ingest(
            session,
            [
                {
                    "message_id": f"web-{tag}",
                    "channel": "web",
                    "type": "page.viewed",
                    "occurred_at": "2026-03-01T10:00:00+00:00",
                    "identifiers": {"phone": national, "user_id": f"u-{tag}"},
                }
            ],
            workspace_id="default",
            default_region="US",
        )
    path = tmp_path / "calls.csv"
    path.write_text(
        f"{GENERIC_HEADER}\n{tag},in,{phone[2:]},300,2026-03-02T09:00:00Z,,40,answered,301\n"
    )
    assert run(any_db, path, tmp_path / "state", mapping=load_mapping("generic")).imported == 1
    published: list[list[int]] = []
    relay(any_db, published.append, batch_size=50, lease_seconds=60)
    for message in published:
        process_batches(any_db, message)
    with any_db.read() as session:
        profile = find_profile_id(session, "default", "user_id", f"u-{tag}", "US")
        assert profile is not None
        assert find_profile_id(session, "default", "phone", phone, "US") == profile
        view = profile_view(session, "default", profile)
    assert view is not None and view["channels"] == {"web": 1, "call": 1}


def test_unreadable_encoding_or_missing_header_stops_with_one_line(
    sqlite_db: Database, tmp_path: Path
) -> None:
    latin = tmp_path / "latin.csv"
    latin.write_bytes(
        f"{GENERIC_HEADER}\nX,in,4155550123,300,2026-03-02T09:00:00Z,,1,answered,Zoë\n".encode(
            "latin-1"
        )
    )
    with pytest.raises(HubError, match="not readable as utf-8-sig"):
        run(sqlite_db, latin, tmp_path / "state", mapping=load_mapping("generic"))
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(HubError, match="no CSV header line"):
        run(sqlite_db, empty, tmp_path / "state", mapping=load_mapping("generic"))
