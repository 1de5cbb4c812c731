"""``ecrm import calls`` as an operator runs it: progress, summary, exit statuses."""

from __future__ import annotations

import csv
import sqlite3
from pathlib import Path

import pytest
from conftest import Hub
from file_imports import assert_one_line_error, embedded_hub

SAMPLE = Path(__file__).parents[1] / "data" / "calls" / "Master.csv"


@pytest.fixture
def hub(tmp_path: Path) -> Hub:
    return embedded_hub(tmp_path)


def test_asterisk_master_csv_imports_resumes_and_restarts(hub: Hub, tmp_path: Path) -> None:
    path = tmp_path / "Master.csv"
    path.write_bytes(SAMPLE.read_bytes())
    args = ("import", "calls", "--mapping", "asterisk", "--timezone", "America/New_York")
    result = hub.cli(*args, str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "importing Master.csv" in result.stderr
    assert (
        "Master.csv (csv, mapping asterisk): 10 rows read, 10 calls, 8 imported, "
        "0 duplicates, 2 skipped, 0 rejected" in result.stdout
    ), result.stdout
    assert "skipped: internal call (both ends are extensions) (2)" in result.stdout
    with sqlite3.connect(f"file:{hub.home / 'hub.sqlite'}?mode=ro", uri=True) as db:
        stored = db.execute(
            "SELECT count(*), min(occurred_at) FROM events WHERE type = 'call.completed'"
        ).fetchone()
    assert stored[0] == 8
    assert str(stored[1]).startswith("2026-03-02 14:15:02")  # 09:15:02 in New York
    again = hub.cli(*args, str(path))
    assert again.returncode == 0 and "resumed after line 10" in again.stdout, again.stdout
    restart = hub.cli(*args, "--restart", str(path))
    assert restart.returncode == 0, restart.stdout + restart.stderr
    assert "0 imported, 8 duplicates, 2 skipped" in restart.stdout


def test_exit_1_when_nothing_could_be_imported(hub: Hub, tmp_path: Path) -> None:
    path = tmp_path / "calls.csv"
    path.write_text(
        "call_id,from,to,started_at\n"
        "A,201,202,2026-03-02T09:00:00Z\n"  # internal: skipped
        "B,4155550123,300,last tuesday\n"  # refused
    )
    result = hub.cli("import", "calls", str(path), "--rejects", str(tmp_path / "r.csv"))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "1 skipped, 1 rejected" in result.stdout
    assert "nothing could be imported" in result.stderr
    with (tmp_path / "r.csv").open(newline="") as handle:
        assert [(r["line"], r["field"]) for r in csv.DictReader(handle)] == [("3", "started_at")]


@pytest.mark.parametrize("case", ["missing file", "unknown mapping", "columns", "timezone"])
def test_unreadable_file_or_bad_mapping_is_one_line_exit_2(
    hub: Hub, tmp_path: Path, case: str
) -> None:
    args, message = {
        "missing file": ([str(tmp_path / "missing.csv")], "cannot read"),
        "unknown mapping": (["--mapping", "nosuch", str(SAMPLE)], "no mapping 'nosuch'"),
        # Master.csv has no header: read with the generic mapping its first row is one.
        "columns": ([str(SAMPLE)], "to: no column 'to'; started_at: no column 'started_at'"),
        "timezone": (["--timezone", "Mars/Olympus", str(SAMPLE)], "unknown IANA time zone"),
    }[case]
    result = hub.cli("import", "calls", *args)
    assert_one_line_error(result, message)
