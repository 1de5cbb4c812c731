"""What every import mapping shares (``connectors.files``): times, columns, checkpoints."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from connectors.files import Checkpoint, Columns, FileMapping, UnknownZone


def mapping(**values: object) -> FileMapping:
    return FileMapping.model_validate({"name": "t", **values})


def test_times_with_an_offset_keep_it_and_naive_ones_take_the_mapping_zone() -> None:
    iso = mapping(timezone="Europe/Berlin")
    assert iso.read_time("2026-03-02T09:00:00-05:00") == datetime(2026, 3, 2, 14, tzinfo=UTC)
    assert iso.read_time("2026-03-02 09:00:00") == datetime(2026, 3, 2, 8, tzinfo=UTC)
    assert iso.read_time("2026-07-02 09:00:00") == datetime(2026, 7, 2, 7, tzinfo=UTC)  # CEST


def test_strptime_format_and_a_rows_own_zone_through_the_timezones_table() -> None:
    local = mapping(timestamp_format="%d.%m.%Y %H:%M", timezones={"Pacific": "America/Los_Angeles"})
    assert local.expected_time == "the format %d.%m.%Y %H:%M"
    assert local.read_time("02.03.2026 09:00", "Pacific") == datetime(2026, 3, 2, 17, tzinfo=UTC)
    assert local.read_time("02.03.2026 09:00", "Asia/Tokyo") == datetime(2026, 3, 2, 0, tzinfo=UTC)
    with pytest.raises(UnknownZone):
        local.read_time("02.03.2026 09:00", "Atlantis Standard Time")
    with pytest.raises(ValueError, match="does not match"):
        local.read_time("2026-03-02 09:00")


def test_mapping_keys_are_validated() -> None:
    with pytest.raises(ValueError, match="unknown IANA time zone"):
        mapping(timezone="Mars/Olympus")
    with pytest.raises(ValueError, match="distinct"):
        mapping(columns=["a", " a "])
    with pytest.raises(ValueError, match="Extra inputs"):
        mapping(colour="blue")
    assert mapping(columns=[" a", "b "]).columns == ["a", "b"]


def test_columns_read_cells_templates_and_null_values() -> None:
    columns = Columns(["Date", "Time", "Note", "Date"], frozenset({"n/a"}))
    row = [" 2026-03-02 ", "09:00", "n/a"]
    assert columns.getter("Date")(row) == "2026-03-02"
    assert columns.getter("{Date}T{Time}")(row) == "2026-03-02T09:00"
    assert columns.getter("Note")(row) is None  # a null value
    assert columns.getter("{Note} {Time}")(row) is None  # a template needs every part
    assert columns.getter("Missing") is None and columns.missing("{Date} {Nope}") == ["Nope"]
    assert columns.position("Date") == 0 and columns.position("Nope") == -1
    short = ["2026-03-02"]
    assert columns.getter("Time")(short) is None
    by_key = Columns(None, frozenset())
    assert by_key.getter("Note")({"Note": " hi ", "n": 3}) == "hi"
    assert by_key.getter("n")({"n": 3}) == "3"


def test_checkpoints_of_two_importers_never_meet(tmp_path: Path) -> None:
    source = tmp_path / "export.csv"
    source.write_text("a\n1\n")
    pos = Checkpoint.load(tmp_path / "state", source, "scope", kind="pos")
    calls = Checkpoint.load(tmp_path / "state", source, "scope", kind="calls")
    assert pos.path != calls.path and pos.path.name.startswith("pos-")
    pos.save(2, 0, complete=True)
    assert Checkpoint.load(tmp_path / "state", source, "scope", kind="pos").line == 2
    assert Checkpoint.load(tmp_path / "state", source, "scope", kind="calls").line == 0
    assert Checkpoint.load(tmp_path / "state", source, "other", kind="pos").line == 0
    pos.path.write_text("{torn")  # a crash mid-write: start over (dedupe keeps it safe)
    assert Checkpoint.load(tmp_path / "state", source, "scope", kind="pos").line == 0
