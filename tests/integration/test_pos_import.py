"""``ecrm import pos``: CSV and JSON Lines into real SQLite and PostgreSQL databases.

Covers grouping of line-item rows, the reject file (line numbers, never a card number),
resuming after an interruption without duplicates, and the CLI's exit statuses.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import Hub
from file_imports import (
    assert_one_line_error,
    embedded_hub,
    events,
    import_into,
    interrupt_at,
    rejects,
)
from sqlalchemy import func, select

from connectors.pos import ImportInterrupted, ImportSummary, import_pos_file, load_mapping
from pipeline import Database, HubError
from pipeline.models import Event
from workers.bench_pos import write_sample

HEADER = (
    "transaction_id,store_id,terminal_id,cashier_id,occurred_at,kind,currency,subtotal,tax,"
    "discount,total,sku,item_name,category,quantity,unit_price,loyalty_card,email,"
    "original_transaction_id,properties.note"
)


def write_csv(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join([HEADER, *lines]) + "\n", encoding="utf-8")
    return path


def run(db: Database, path: Path, state: Path, **options: Any) -> ImportSummary:
    options.setdefault("mapping", load_mapping("generic"))
    return import_into(import_pos_file, db, path, state, **options)


def count(db: Database) -> int:
    with db.read() as session:
        return int(session.scalar(select(func.count()).select_from(Event)) or 0)


def test_line_item_csv_is_grouped_linked_and_idempotent(any_db: Database, tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:8]
    sample = write_csv(
        tmp_path / "sales.csv",
        [
            f"T1-{tag},S1,R1,C1,2026-11-02T10:00:00+01:00,sale,EUR,30,5.70,0,35.70,"
            "A,Coffee,Grocery,2,10,LC-1,,,first",
            f"T1-{tag},,,,,,,,,,,B,Mug,Home,1,10,,,,",
            f"T2-{tag},S1,R1,C1,2026-11-02T10:05:00+01:00,sale,eur,5,0,0,5,C,Tea,,1,5,,"
            "Bob@Example.com,,",
            f"R1-{tag},S1,R1,C1,2026-11-02T11:00:00+01:00,refund,EUR,10,0,0,10,B,Mug,Home,1,10,"
            f"LC-1,,T1-{tag},",
        ],
    )
    summary = run(any_db, sample, tmp_path / "state")
    assert (summary.rows, summary.transactions, summary.imported) == (4, 3, 3)
    assert summary.rejected == 0 and summary.rejects_path is None
    stored = events(any_db, "pos:S1:")
    sale = stored[f"pos:S1:T1-{tag}"]
    assert sale.type == "order.completed" and sale.source == "pos-import"
    assert [item["name"] for item in sale.properties["items"]] == ["Coffee", "Mug"]
    assert sale.properties["item_count"] == 3 and sale.properties["note"] == "first"
    assert sale.identifiers == {"loyalty_card": "LC-1"}
    assert stored[f"pos:S1:T2-{tag}"].identifiers == {"email": "bob@example.com"}
    refund = stored[f"pos:S1:R1-{tag}"]
    assert refund.type == "order.refunded"
    assert refund.properties["original_message_id"] == f"pos:S1:T1-{tag}"
    again = run(any_db, sample, tmp_path / "state", restart=True)
    assert (again.imported, again.duplicates) == (0, 3)
    assert len(events(any_db, "pos:S1:")) == 3


def test_json_lines_documents_are_imported_and_bad_lines_rejected(
    any_db: Database, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:8]
    document = {
        "transaction_id": f"J1-{tag}",
        "store_id": "S9",
        "occurred_at": "2026-11-02T10:00:00Z",
        "currency": "GBP",
        "totals": {"subtotal": 4, "total": 4.8, "tax": 0.8},
        "items": [{"name": "Scone", "unit_price": 2, "quantity": 2}],
        "customer": {"card_fingerprint": "fp_9f8e7d"},
    }
    lines = [
        orjson.dumps(document).decode(),
        "",
        "{not json",
        "[1, 2]",
        orjson.dumps({**document, "transaction_id": f"J2-{tag}", "currency": "??"}).decode(),
        orjson.dumps({**document, "transaction_id": f"J3-{tag}"}).decode(),
    ]
    path = tmp_path / "tills.jsonl"
    path.write_text("\n".join(lines) + "\n")
    summary = run(any_db, path, tmp_path / "state")
    assert (summary.imported, summary.rejected) == (2, 3)
    stored = events(any_db, "pos:S9:")
    assert set(stored) == {f"pos:S9:J1-{tag}", f"pos:S9:J3-{tag}"}
    assert stored[f"pos:S9:J1-{tag}"].identifiers == {"card_fingerprint": "fp_9f8e7d"}
    assert summary.rejects_path is not None
    assert [(r["line"], r["field"]) for r in rejects(summary.rejects_path)] == [
        ("3", "line"),
        ("4", "line"),
        ("5", "currency"),
    ]


def test_square_export_loads_unedited(any_db: Database, tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:6]
    header = (
        "Date,Time,Time Zone,Category,Item,Qty,Price Point Name,SKU,Modifiers Applied,"
        "Gross Sales,Discounts,Net Sales,Tax,Transaction ID,Payment ID,Device Name,Notes,"
        "Details,Event Type,Location,Dining Option,Customer ID,Customer Name,"
        "Customer Reference ID,Unit,Count,GTIN,Itemization Type,Commission,Employee,"
        "Fulfillment Note,Channel,Token,Card Brand,PAN Suffix"
    )
    common = ',"",https://example.invalid/x,{event},Shop {tag},"",{customer},"","",ea,1,"",'
    common += 'Physical Good,$0.00,Ann,"",Shop,TOKEN,Visa,0088'
    rows = [
        '2026-06-11,13:51:07,Eastern Time (US & Canada),None,Lemonade,2.0,Regular,"","16oz",'
        "$10.00,$0.00,$10.00,$0.77,TX{tag},PAY1,Square Terminal"
        + common.format(event="Payment", tag=tag, customer="CUST1"),
        '2026-06-11,13:51:07,Eastern Time (US & Canada),Drinks,Matcha,1.0,"","","12oz",'
        "$8.00,-$1.00,$7.00,$0.62,TX{tag},PAY1,Square Terminal"
        + common.format(event="Payment", tag=tag, customer="CUST1"),
        '2026-06-12,09:00:00,Eastern Time (US & Canada),None,Lemonade,-1.0,Regular,"","16oz",'
        "-$5.00,$0.00,-$5.00,-$0.39,TX{tag},PAY1,Square Terminal"
        + common.format(event="Refund", tag=tag, customer=""),
    ]
    path = tmp_path / "items-2026-06-11.csv"
    path.write_text(header + "\n" + "\n".join(r.replace("{tag}", tag) for r in rows) + "\n")
    summary = run(any_db, path, tmp_path / "state", mapping=load_mapping("square"))
    assert (summary.transactions, summary.imported, summary.rejected) == (2, 2, 0)
    stored = events(any_db, f"pos:Shop {tag}:")
    sale = stored[f"pos:Shop {tag}:TX{tag}"]
    assert sale.properties["total"] == 18.39 and sale.properties["cashier_id"] == "Ann"
    assert sale.identifiers == {"customer_id": "CUST1"}
    refund = stored[f"pos:Shop {tag}:TX{tag}:refund:2026-06-12T09:00:00"]
    assert refund.properties["original_message_id"] == f"pos:Shop {tag}:TX{tag}"
    assert refund.properties["total"] == 5.39


def test_reject_file_has_line_field_and_reason_but_never_the_card_number(
    sqlite_db: Database, tmp_path: Path
) -> None:
    sample = write_csv(
        tmp_path / "mixed.csv",
        [
            'G1,S1,R1,C1,2026-11-02T10:00:00Z,sale,EUR,3,0,0,3,A,"Two-line\nname",,1,1,,,,',
            "G1,,,,,,,,,,,B,Second,,one,1,,,,",  # line 4: bad quantity in the 2nd row
            "G2,S1,R1,C1,2026-11-02T10:00:00Z,sale,EUR,3,0,0,3,A,Tea,,1,3,4111 1111 1111 1111,,,",
            "G3,S1,R1,C1,2026-11-02T10:00:00Z,exchange,EUR,3,0,0,3,A,Tea,,1,3,,,,",
            "G4,S1,R1,C1,yesterday,sale,EUR,3,0,0,3,A,Tea,,1,3,,,,",
            "G5,S1,R1,C1,2026-11-02T10:00:00Z,sale,EUR,3,0,0,3,A,Tea,,1,3,,,,paid 5555555555554444",
            "G6,S1,R1,C1,2026-11-02T10:00:00Z,refund,EUR,3,0,0,3,A,Tea,,1,3,,,,",
            "G7,S1,R1,C1,2026-11-02T10:00:00Z,sale,EUR,3,0,0,3,A,Tea,,1,3,,,,",
        ],
    )
    target = tmp_path / "out" / "refused.csv"
    target.parent.mkdir()
    summary = run(sqlite_db, sample, tmp_path / "state", rejects_path=target)
    assert (summary.imported, summary.rejected) == (1, 6)
    assert summary.rejects_path == target
    found = [(r["line"], r["field"]) for r in rejects(target)]
    assert found == [
        ("4", "items.1.quantity"),
        ("5", "customer.loyalty_card"),
        ("6", "kind"),
        ("7", "occurred_at"),
        ("8", "properties.note"),
        ("9", "original_transaction_id"),
    ]
    text = target.read_text()
    assert "4111" not in text and "5555" not in text and "Two-line" not in text


def test_resume_after_interruption_imports_each_transaction_once(
    any_db: Database, tmp_path: Path
) -> None:
    path = tmp_path / "big.csv"
    transactions = write_sample(path, 2400, items=3, seed=uuid.uuid4().int % 10_000)
    with path.open("a") as handle:  # a refused row after the interruption point
        handle.write("BAD,S1,R1,C1,not a time,sale,EUR,1,0,0,1,A,Tea,,1,1,,,,,,\n")
    state = tmp_path / "state"
    with pytest.raises(ImportInterrupted) as caught:
        run(any_db, path, state, chunk_size=150, on_progress=interrupt_at(3))
    first = caught.value.summary
    assert first.imported == 450 and first.done_line > 0
    assert len(events(any_db, "pos:S0")) == 450
    second = run(any_db, path, state, chunk_size=150)
    assert second.resumed_after == first.done_line
    assert second.duplicates == 0 and second.rejected == 1
    assert first.imported + second.imported == transactions
    assert len(events(any_db, "pos:S0")) == transactions
    assert summary_lines(second) == 1
    third = run(any_db, path, state)  # complete: nothing read again
    assert (third.rows, third.imported, third.resumed_after) == (0, 0, second.done_line)
    assert not third.nothing_imported


def summary_lines(summary: ImportSummary) -> int:
    assert summary.rejects_path is not None
    return len(rejects(summary.rejects_path))


def test_a_truncated_copy_then_the_full_file_gives_no_duplicates(
    any_db: Database, tmp_path: Path
) -> None:
    full = tmp_path / "full.csv"
    transactions = write_sample(full, 1200, items=2, seed=uuid.uuid4().int % 10_000)
    lines = full.read_text().splitlines(keepends=True)
    partial = tmp_path / "partial.csv"
    partial.write_text("".join(lines[:700]))  # may cut a transaction in two
    first = run(any_db, partial, tmp_path / "state")
    second = run(any_db, full, tmp_path / "state")
    assert second.resumed_after == 0  # another file: the checkpoint does not apply
    # The copy may end inside a basket: that sale was imported with fewer items, and the
    # full file's version of it is a duplicate (the first version wins, as for any resend).
    assert second.duplicates == first.imported
    assert first.imported + second.imported == transactions
    assert len(events(any_db, "pos:S0")) == transactions
    with any_db.read() as session:
        ids = session.scalars(select(Event.message_id).where(Event.channel == "pos")).all()
    assert len(ids) == len(set(ids))


def test_file_in_another_encoding_stops_with_one_line(sqlite_db: Database, tmp_path: Path) -> None:
    path = tmp_path / "latin.csv"
    row = "L1,S1,R1,C1,2026-11-02T10:00:00Z,sale,EUR,3,0,0,3,A,Crème brûlée,,1,3,,,,"
    path.write_bytes(("\n".join([HEADER, row]) + "\n").encode("latin-1"))
    with pytest.raises(HubError, match="not readable as utf-8-sig"):
        run(sqlite_db, path, tmp_path / "state")


# -- the command line -------------------------------------------------------------------


@pytest.fixture
def cli_hub(tmp_path: Path) -> Hub:
    return embedded_hub(tmp_path)


def test_cli_imports_shows_progress_and_summary(cli_hub: Hub, tmp_path: Path) -> None:
    path = tmp_path / "sales.csv"
    write_sample(path, 300, items=2)
    result = cli_hub.cli("import", "pos", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "importing sales.csv" in result.stderr
    assert "300 rows read" in result.stdout and "0 rejected" in result.stdout
    again = cli_hub.cli("import", "pos", str(path))
    assert again.returncode == 0 and "resumed after line 301" in again.stdout
    restart = cli_hub.cli("import", "pos", "--restart", str(path))
    assert restart.returncode == 0 and "0 imported" in restart.stdout


def test_cli_exit_1_when_nothing_could_be_imported(cli_hub: Hub, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "bad.csv", ["X1,S1,R1,C1,later,sale,EUR,1,0,0,1,A,Tea,,1,1,,,,"])
    result = cli_hub.cli("import", "pos", str(path), "--rejects", str(tmp_path / "r.csv"))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "1 rejected" in result.stdout
    assert rejects(tmp_path / "r.csv")[0]["field"] == "occurred_at"
    empty = write_csv(tmp_path / "empty.csv", [])
    assert cli_hub.cli("import", "pos", str(empty)).returncode == 1


@pytest.mark.parametrize("case", ["missing file", "unknown mapping", "columns", "extension"])
def test_cli_unreadable_file_or_bad_mapping_is_one_line_exit_2(
    cli_hub: Hub, tmp_path: Path, case: str
) -> None:
    ok = write_csv(tmp_path / "ok.csv", [])
    odd = tmp_path / "ok.unknown"
    odd.write_text(HEADER)
    args, message = {
        "missing file": ([str(tmp_path / "missing.csv")], "cannot read"),
        "unknown mapping": (["--mapping", "nosuch", str(ok)], "no mapping 'nosuch'"),
        "columns": (["--mapping", "square", str(ok)], "no column 'Transaction ID'"),
        "extension": ([str(odd)], "--format"),
    }[case]
    result = cli_hub.cli("import", "pos", *args)
    assert_one_line_error(result, message)
