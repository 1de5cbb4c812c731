"""``ecrm import calls FILE``: call-detail records (CSV) into the event log.

The streaming, chunked ingest, checkpoint, reject file and interruption are the shared
file-import loop (:mod:`connectors.files.importer`, which explains why a re-run resumes
without duplicates); what is call-specific is one record -> one ``call.completed``
(:mod:`connectors.calls.cdr`). Records between two extensions are counted as skipped,
with their reason, in the summary.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from connectors.calls.cdr import CompiledCallMapping, Skip
from connectors.calls.mapping import CallMapping
from connectors.files.columns import RowError
from connectors.files.importer import (
    CHUNK,
    Batch,
    Converted,
    FileSource,
    ImportSummary,
    Opened,
    Outcome,
    Refused,
    Skipped,
    import_file,
)
from connectors.files.records import Record, csv_records
from pipeline import Database, HubError


def import_calls_file(
    db: Database,
    path: Path,
    *,
    mapping: CallMapping,
    workspace_id: str,
    default_region: str,
    state_dir: Path,
    scope: str = "",
    rejects_path: Path | None = None,
    restart: bool = False,
    chunk_size: int = CHUNK,
    on_progress: Callable[[int], None] | None = None,
) -> ImportSummary:
    """Import one CDR file (always CSV); returns what happened.

    The mapping's time zone is part of the checkpoint's scope: re-reading a file in
    another zone starts over (the times differ; the message ids keep it safe).
    """
    source = FileSource(
        kind="calls",
        unit="calls",
        mapping=mapping.name,
        file_format="csv",
        encoding=mapping.encoding,
        open=lambda text: _open(text, mapping, path),
    )
    return import_file(
        db,
        path,
        source,
        workspace_id=workspace_id,
        default_region=default_region,
        state_dir=state_dir,
        scope=f"{scope}\0{mapping.timezone}",
        rejects_path=rejects_path,
        restart=restart,
        chunk_size=chunk_size,
        on_progress=on_progress,
    )


def _open(text: IO[str], mapping: CallMapping, path: Path) -> Opened:
    """The records, and the mapping bound to the header (or to the mapping's ``columns``)."""
    records = csv_records(text, mapping.delimiter)
    if mapping.columns is not None:
        header: list[str] = mapping.columns
    else:
        first = next(records, None)
        if first is None or first[2] is None:
            raise HubError(f"{path}: no CSV header line (or give columns: in the mapping)")
        header = first[2]
    compiled = CompiledCallMapping(mapping, header)

    def convert(records: Iterator[Record], batch: Batch) -> Iterator[Outcome]:
        for start, end, row, error in records:
            if error is not None:
                yield Refused(end, start, "line", error)
                continue
            try:
                touchpoint = compiled.touchpoint(
                    row,
                    received_at=batch.received_at,
                    default_region=batch.default_region,
                    context=batch.context,
                )
            except RowError as exc:
                yield Refused(end, start, exc.field, exc.reason)
            except Skip as skip:
                yield Skipped(end, skip.reason)
            else:
                yield Converted(end, start, touchpoint)

    return Opened(records, convert, compiled.notes)


__all__ = ["import_calls_file"]
