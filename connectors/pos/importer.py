"""``ecrm import pos FILE``: a POS export (CSV or JSON Lines) into the event log.

The streaming, chunked ingest, checkpoint, reject file and interruption are the shared
file-import loop (:mod:`connectors.files.importer`, which explains why it resumes without
duplicates); what is POS-specific lives here: consecutive rows of one transaction are
grouped (line-item exports write one row per item), built into a transaction document by
the mapping, validated by the same schema as ``POST /v1/pos/transactions`` and made into
one touchpoint, ``pos:{store}:{transaction}``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, Unpack

from connectors.files.importer import (
    CHUNK,
    Batch,
    Converted,
    FileSource,
    ImportInterrupted,
    ImportOptions,
    ImportSummary,
    Opened,
    Outcome,
    Refused,
    import_file,
)
from connectors.files.records import Record, csv_with_header, file_format, jsonl_records
from connectors.pos.mapping import Mapping
from connectors.pos.pan import may_hold_pan
from connectors.pos.rows import CompiledMapping, RowError
from connectors.pos.transactions import Kind, parse_transaction, to_touchpoint
from pipeline import Database, ValidationError

MAX_ROWS_PER_TRANSACTION = 1000
SOURCE = "pos-import"


def import_pos_file(
    db: Database,
    path: Path,
    *,
    mapping: Mapping,
    file_format_name: str | None = None,
    **options: Unpack[ImportOptions],
) -> ImportSummary:
    """Import one export file; returns what happened.

    The format is ``file_format_name`` (``csv``, ``jsonl``), else the file name's
    extension; ``options`` are the shared loop's (``on_progress`` gets bytes read).
    """
    fmt = file_format(path, file_format_name)
    source = FileSource(
        "pos", "transactions", mapping, fmt, lambda text: _open(text, fmt, mapping, path)
    )
    return import_file(db, path, source, **options)


def _open(text: IO[str], fmt: str, mapping: Mapping, path: Path) -> Opened:
    """The file's records, and the mapping bound to its header (``None``: API documents)."""
    compiled: CompiledMapping | None
    if fmt == "csv":
        records, header = csv_with_header(text, mapping, path)
        compiled = CompiledMapping(mapping, header)
    else:
        records = jsonl_records(text)
        compiled = CompiledMapping(mapping, None) if mapping.jsonl == "rows" else None
    notes = compiled.notes if compiled is not None else []

    def convert(records: Iterator[Record], batch: Batch) -> Iterator[Outcome]:
        for lines, done, rows, kind, error in _groups(records, compiled):
            if error is not None:
                yield Refused(done, lines[0], error[0], error[1])
            else:
                yield _convert(compiled, lines, done, rows, kind, batch)

    return Opened(records, convert, notes)


#: (first line of each row, last line of the group, the rows, their kind, or the
#: (field, reason) refusing a lone row).
Group = tuple[list[int], int, list[Any], Kind, tuple[str, str] | None]


def _groups(records: Iterator[Record], compiled: CompiledMapping | None) -> Iterator[Group]:
    """Consecutive records of one transaction, as (line of each, rows, error or None).

    A row continues the open transaction when it has the same transaction id and its store
    and kind are the same or blank (exports often fill order fields on the first row only).
    """
    lines: list[int] = []
    rows: list[Any] = []
    done = 0
    store: str | None = None
    transaction: str | None = None
    kind = Kind.SALE
    for start, end, row, error in records:
        problem: tuple[str, str] | None = ("line", error) if error is not None else None
        if problem is None and compiled is not None:
            try:
                row_kind = compiled.kind(row)
                row_store, row_transaction = compiled.ids(row, row_kind or kind)
            except RowError as exc:
                problem = (exc.field, exc.reason)
            else:
                if (
                    rows
                    and row_transaction is not None
                    and row_transaction == transaction
                    and row_store in (None, store)
                    and row_kind in (None, kind)
                    and len(rows) < MAX_ROWS_PER_TRANSACTION
                ):
                    lines.append(start)
                    rows.append(row)
                    done = end
                    continue
                if rows:
                    yield lines, done, rows, kind, None
                lines, rows, done = [start], [row], end
                store, transaction, kind = row_store, row_transaction, row_kind or Kind.SALE
                continue
        if rows:
            yield lines, done, rows, kind, None
            lines, rows = [], []
        yield [start], end, [row], Kind.SALE, problem
    if rows:
        yield lines, done, rows, kind, None


def _convert(
    compiled: CompiledMapping | None,
    lines: list[int],
    done: int,
    rows: list[Any],
    kind: Kind,
    batch: Batch,
) -> Outcome:
    """One transaction's rows validated into its touchpoint, or the refusal."""
    item_rows: list[int] = []
    try:
        searched = False
        if compiled is None:
            document = rows[0]
        else:
            document, item_rows = compiled.build(rows, kind)
            if compiled.csv and not compiled.has_templates:
                searched = not any(may_hold_pan(row) for row in rows)
        transaction = parse_transaction(
            document, default_region=batch.default_region, searched_for_pan=searched
        )
    except RowError as exc:
        line = lines[exc.item] if exc.item is not None else lines[0]
        return Refused(done, line, exc.field, exc.reason)
    except ValidationError as exc:
        return Refused(done, _line_of(exc.field, lines, item_rows), exc.field, exc.message)
    touchpoint = to_touchpoint(
        transaction, received_at=batch.received_at, source=SOURCE, context=batch.context
    )
    return Converted(done, lines[0], touchpoint)


def _line_of(field_name: str, lines: list[int], item_rows: list[int]) -> int:
    """The file line an error points at: the item's own row when the field is an item's."""
    parts = field_name.split(".")
    if len(parts) > 1 and parts[0] == "items" and parts[1].isdigit():
        index = int(parts[1])
        if index < len(item_rows):
            return lines[item_rows[index]]
    return lines[0]


__all__ = ["CHUNK", "ImportInterrupted", "ImportSummary", "import_pos_file"]
