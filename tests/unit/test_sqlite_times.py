"""SQLite time text: what is read in another form is never written back in that form."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy.dialects import sqlite

from pipeline.db import UTCDateTime, sqlite_time


def test_a_time_read_in_another_form_is_written_in_the_canonical_form() -> None:
    read = UTCDateTime().result_processor(sqlite.dialect(), None)
    moment = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
    assert read("2026-11-01 09:00:00") == moment  # e.g. written by SQLite's CURRENT_TIMESTAMP
    assert sqlite_time(moment) == "2026-11-01 09:00:00.000000"
    assert read("2026-11-01 09:00:00.000000") == moment
    assert sqlite_time(moment) == "2026-11-01 09:00:00.000000"
