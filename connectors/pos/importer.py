"""``ecrm import pos FILE``: stream a POS export (CSV or JSON Lines) into the event log.

Why it streams in chunks: a year of sales is millions of rows, so the file is read record
by record and written 500 transactions per database transaction; memory holds one chunk.

Why it resumes without duplicates: after each committed chunk a checkpoint (a small JSON
file in ``ECRM_HOME/imports``, keyed by the file's path, size and modification time, the
mapping, workspace and database) records the last line fully dealt with, so a re-run
skips what is done without converting it. The checkpoint is written only after the
commit, so it may lag behind (a crash in between) but never run ahead; what it lags by is
caught by the event log's unique message id (``pos:{store}:{transaction}``) and counted
as duplicates. The reject file is cut back to its size at the checkpoint on resume, so a
rejected row is listed once.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from connectors.pos.mapping import Mapping
from connectors.pos.pan import may_hold_pan
from connectors.pos.records import CountingRaw, Record, csv_records, file_format, jsonl_records
from connectors.pos.rows import CompiledMapping, RowError
from connectors.pos.state import Checkpoint, RejectFile
from connectors.pos.transactions import Kind, parse_transaction, to_touchpoint
from pipeline import Database, HubError, Touchpoint, ValidationError, ingest, utcnow

CHUNK = 500
MAX_ROWS_PER_TRANSACTION = 1000


class ImportInterrupted(HubError):
    """The import stopped early (Ctrl-C); everything up to ``line`` is committed."""

    def __init__(self, summary: ImportSummary) -> None:
        line = summary.done_line
        super().__init__(f"interrupted after line {line:,}; run the same command to resume")
        self.summary = summary


@dataclass
class ImportSummary:
    """What one run did (counts are this run's; ``resumed_after`` lines were already done)."""

    path: Path
    mapping: str
    file_format: str
    resumed_after: int = 0
    rows: int = 0
    transactions: int = 0
    imported: int = 0
    duplicates: int = 0
    rejected: int = 0
    done_line: int = 0
    rejects_path: Path | None = None
    notes: list[str] = field(default_factory=list)
    elapsed: float = 0.0

    @property
    def nothing_imported(self) -> bool:
        """True when no transaction is in the log because of this file (exit status 1)."""
        return self.imported == 0 and self.duplicates == 0 and self.resumed_after == 0


class _Run:
    """The state of one import run (kept in one place so the loop stays readable)."""

    def __init__(self, summary: ImportSummary, rejects: RejectFile) -> None:
        self.summary, self.rejects = summary, rejects
        self.pending: list[tuple[int, Touchpoint]] = []

    def reject(self, line: int, field_name: str, reason: str) -> None:
        self.summary.rejected += 1
        self.rejects.write(line, field_name, reason)


def import_pos_file(
    db: Database,
    path: Path,
    *,
    mapping: Mapping,
    workspace_id: str,
    default_region: str,
    state_dir: Path,
    scope: str = "",
    file_format_name: str | None = None,
    rejects_path: Path | None = None,
    restart: bool = False,
    chunk_size: int = CHUNK,
    on_progress: Callable[[int], None] | None = None,
) -> ImportSummary:
    """Import one export file; returns what happened. ``on_progress`` gets bytes read."""
    started = time.perf_counter()
    fmt = file_format(path, file_format_name)
    try:
        counter = CountingRaw(path.open("rb", buffering=0))
    except OSError as exc:
        raise HubError(f"cannot read {path}: {exc.strerror or exc}") from None
    text = io.TextIOWrapper(
        io.BufferedReader(counter, 1 << 16), encoding=mapping.encoding, newline=""
    )
    with text:
        scope = f"{fmt}\0{mapping.name}\0{scope}\0{workspace_id}"
        checkpoint = Checkpoint.load(state_dir, path, scope)
        resume_line = 0 if restart else checkpoint.line
        rejects = RejectFile(
            rejects_path or path.with_name(path.name + ".rejects.csv"),
            keep_bytes=checkpoint.rejects_size if resume_line else 0,
        )
        summary = ImportSummary(path, mapping.name, fmt, resumed_after=resume_line)
        summary.done_line = resume_line
        run = _Run(summary, rejects)
        # One context for every event of the file (never mutated, so shared).
        context = {"import": {"mapping": mapping.name, "file": path.name}}

        def flush() -> None:
            if run.pending:
                touchpoints = [tp for _, tp in run.pending]
                with db.write() as session:
                    results = ingest(
                        session,
                        touchpoints,
                        workspace_id=workspace_id,
                        default_region=default_region,
                    )
                for result in results:
                    if result.status == "accepted":
                        summary.imported += 1
                    elif result.status == "duplicate":
                        summary.duplicates += 1
                    else:
                        line = run.pending[result.index][0]
                        run.reject(line, result.field or "", result.reason or "")
                run.pending.clear()
            checkpoint.save(summary.done_line, rejects.size())
            if on_progress is not None:
                on_progress(counter.count)

        try:
            compiled, records = _compile(text, fmt, mapping, path)
            if compiled is not None:
                summary.notes.extend(compiled.notes)
            received = utcnow()
            groups = _groups(records, compiled, resume_line, summary)
            for lines, rows, kind, error in groups:
                summary.transactions += 1
                if error is not None:
                    run.reject(lines[0], error[0], error[1])
                else:
                    _convert(run, compiled, lines, rows, kind, default_region, received, context)
                summary.done_line = lines[-1]
                if len(run.pending) >= chunk_size:
                    flush()
                    received = utcnow()
            flush()
        except UnicodeDecodeError:
            raise HubError(
                f"{path}: not readable as {mapping.encoding} after line {checkpoint.line:,} "
                "(set encoding in the mapping)"
            ) from None
        except KeyboardInterrupt:
            summary.done_line = checkpoint.line  # what is committed; the rest is redone
            summary.elapsed = time.perf_counter() - started
            raise ImportInterrupted(summary) from None
        finally:
            rejects.close()
        checkpoint.save(summary.done_line, rejects.size(), complete=True)
    if rejects.path.exists():
        summary.rejects_path = rejects.path
    summary.elapsed = time.perf_counter() - started
    return summary


def _compile(
    text: io.TextIOWrapper, fmt: str, mapping: Mapping, path: Path
) -> tuple[CompiledMapping | None, Iterator[Record]]:
    """The file's records, and the mapping bound to its header (``None``: API documents)."""
    if fmt == "csv":
        records = csv_records(text, mapping.delimiter)
        header = next(records, None)
        if header is None or header[2] is None:
            raise HubError(f"{path}: no CSV header line")
        return CompiledMapping(mapping, header[2]), records
    records = jsonl_records(text)
    return (CompiledMapping(mapping, None) if mapping.jsonl == "rows" else None), records


#: (line of each row, the rows, their kind, or the (field, reason) refusing a lone row).
Group = tuple[list[int], list[Any], Kind, tuple[str, str] | None]


def _groups(
    records: Iterator[Record],
    compiled: CompiledMapping | None,
    resume_line: int,
    summary: ImportSummary,
) -> Iterator[Group]:
    """Consecutive records of one transaction, as (line of each, rows, error or None).

    A row continues the open transaction when it has the same transaction id and its store
    and kind are the same or blank (exports often fill order fields on the first row only).
    """
    lines: list[int] = []
    rows: list[Any] = []
    store: str | None = None
    transaction: str | None = None
    kind = Kind.SALE
    for start, end, row, error in records:
        if end <= resume_line:
            continue
        summary.rows += 1
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
                    continue
                if rows:
                    yield lines, rows, kind, None
                lines, rows = [start], [row]
                store, transaction, kind = row_store, row_transaction, row_kind or Kind.SALE
                continue
        if rows:
            yield lines, rows, kind, None
            lines, rows = [], []
        yield [start], [row], Kind.SALE, problem
    if rows:
        yield lines, rows, kind, None


def _convert(
    run: _Run,
    compiled: CompiledMapping | None,
    lines: list[int],
    rows: list[Any],
    kind: Kind,
    default_region: str,
    received: datetime,
    context: dict[str, Any],
) -> None:
    """Validate one transaction's rows and queue its touchpoint, or reject it."""
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
            document, default_region=default_region, searched_for_pan=searched
        )
    except RowError as exc:
        line = lines[exc.item] if exc.item is not None else lines[0]
        run.reject(line, exc.field, exc.reason)
        return
    except ValidationError as exc:
        run.reject(_line_of(exc.field, lines, item_rows), exc.field, exc.message)
        return
    touchpoint = to_touchpoint(
        transaction, received_at=received, source="pos-import", context=context
    )
    run.pending.append((lines[0], touchpoint))


def _line_of(field_name: str, lines: list[int], item_rows: list[int]) -> int:
    """The file line an error points at: the item's own row when the field is an item's."""
    parts = field_name.split(".")
    if len(parts) > 1 and parts[0] == "items" and parts[1].isdigit():
        index = int(parts[1])
        if index < len(item_rows):
            return lines[item_rows[index]]
    return lines[0]


__all__ = ["CHUNK", "ImportInterrupted", "ImportSummary", "import_pos_file"]
