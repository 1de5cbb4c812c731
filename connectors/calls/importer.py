"""``ecrm import calls FILE``: call-detail records (CSV) into the event log.

The streaming, chunked ingest, checkpoint, reject file and interruption are the shared
file-import loop (:mod:`connectors.files.importer`, which explains why a re-run resumes
without duplicates); what is call-specific is one record -> one ``call.completed``
(:mod:`connectors.calls.cdr`). Records between two extensions are counted as skipped,
with their reason, in the summary.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import IO, Unpack

from connectors.calls.cdr import CompiledCallMapping, Skip
from connectors.calls.mapping import CallMapping
from connectors.files.columns import RowError
from connectors.files.importer import (
    Batch,
    Converted,
    FileSource,
    ImportOptions,
    ImportSummary,
    Opened,
    Outcome,
    Refused,
    Skipped,
    import_file,
)
from connectors.files.records import Record, csv_with_header
from pipeline import Database


def import_calls_file(
    db: Database, path: Path, *, mapping: CallMapping, **options: Unpack[ImportOptions]
) -> ImportSummary:
    """Import one CDR file (always CSV); returns what happened.

    ``options`` are the shared loop's (``on_progress`` gets bytes read).

    The mapping's time zone is part of the checkpoint's scope: re-reading a file in
    another zone starts over (the times differ; the message ids keep it safe).
    """
    options["scope"] = f"{options.get('scope', '')}\0{mapping.timezone}"
    source = FileSource("calls", "calls", mapping, "csv", lambda text: _open(text, mapping, path))
    return import_file(db, path, source, **options)


def _open(text: IO[str], mapping: CallMapping, path: Path) -> Opened:
    """The records, and the mapping bound to the header (or to the mapping's ``columns``)."""
    hint = " (or give columns: in the mapping)"
    records, header = csv_with_header(text, mapping, path, hint=hint)
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
