"""The loop of every file import: stream records, convert, ingest in chunks, checkpoint.

Why one loop for every connector: streaming, resuming and the reject file have crash rules
that are easy to get subtly wrong, so they are written once. A connector supplies a
:class:`FileSource`: how to open its file (read the header, bind its mapping) and a
*converter* turning the file's records into outcomes: a touchpoint to ingest, a refusal
(line, field, reason), or a skip (a record that is no touchpoint, counted with a reason).
The converter may group records (a POS basket spans several rows); each outcome says the
last line it used, which is what the checkpoint records.

Why it streams in chunks: an export may hold millions of rows, so the file is read record
by record and ingested ``chunk_size`` touchpoints per database transaction; memory holds
one chunk.

Why it resumes without duplicates: after each committed chunk a checkpoint (a small JSON
file in ``ECRM_HOME/imports``, keyed by the file's path, size and modification time, the
importer, format, mapping, workspace and database) records the last line fully dealt
with, so a re-run skips what is done without converting it. The checkpoint is written only
after the commit, so it may lag behind (a crash in between) but never run ahead; what it
lags by is caught by the event log's unique message id and counted as duplicates. The
reject file is cut back to its size at the checkpoint on resume, so a refused record is
listed once.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any, NamedTuple, Required, TypedDict, Unpack

from connectors.files.mapping import FileMapping
from connectors.files.records import CountingRaw, Record
from connectors.files.state import Checkpoint, RejectFile
from pipeline import Database, HubError, Touchpoint, ingest, utcnow

CHUNK = 500


class Converted(NamedTuple):
    """A touchpoint to ingest, from the record starting at ``line``."""

    done: int
    line: int
    touchpoint: Touchpoint


class Refused(NamedTuple):
    """A record (starting at ``line``) that cannot be imported, and why."""

    done: int
    line: int
    field: str
    reason: str


class Skipped(NamedTuple):
    """A record that is no touchpoint (say, a call between two extensions), and why."""

    done: int
    reason: str


Outcome = Converted | Refused | Skipped


@dataclass
class Batch:
    """What a converter needs besides the records: the same for every touchpoint of a
    chunk (``received_at`` moves on after each commit; ``context`` is never mutated)."""

    received_at: datetime
    default_region: str
    context: dict[str, Any]


#: Records (after the checkpoint) -> outcomes, in file order.
Converter = Callable[[Iterator[Record], Batch], Iterator[Outcome]]


@dataclass
class Opened:
    """A file bound to its mapping: its records (header consumed), the converter to use,
    and notes on what the mapping asks for that the file lacks."""

    records: Iterator[Record]
    convert: Converter
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class FileSource:
    """What the loop needs from a connector to import one file.

    ``kind`` names the importer (``pos``, ``calls``: checkpoint files, event source
    ``{kind}-import``); ``unit`` is what one outcome is called in the summary;
    ``mapping`` gives the file's encoding and the name that the checkpoint, the events'
    context and the summary carry. ``open`` reads the header from the text stream and may
    raise ``HubError`` (exit 2).
    """

    kind: str
    unit: str
    mapping: FileMapping
    file_format: str
    open: Callable[[IO[str]], Opened]


class ImportOptions(TypedDict, total=False):
    """How to run one import, whatever the connector: the keywords of :func:`import_file`,
    which every connector's ``import_..._file`` passes on as they are.

    ``scope`` is anything else that makes a checkpoint apply (the database URL);
    ``rejects_path`` defaults to ``FILE.rejects.csv``; ``restart`` ignores the checkpoint;
    ``on_progress`` gets the bytes read after each chunk.
    """

    workspace_id: Required[str]
    default_region: Required[str]
    state_dir: Required[Path]
    scope: str
    rejects_path: Path | None
    restart: bool
    chunk_size: int
    on_progress: Callable[[int], None] | None


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
    unit: str = "transactions"
    resumed_after: int = 0
    rows: int = 0
    units: int = 0
    imported: int = 0
    duplicates: int = 0
    skipped: int = 0
    rejected: int = 0
    done_line: int = 0
    rejects_path: Path | None = None
    notes: list[str] = field(default_factory=list)
    skip_reasons: dict[str, int] = field(default_factory=dict)
    elapsed: float = 0.0

    @property
    def transactions(self) -> int:
        """The POS importer's name for :attr:`units`."""
        return self.units

    @property
    def nothing_imported(self) -> bool:
        """True when nothing is in the log because of this file (exit status 1)."""
        return self.imported == 0 and self.duplicates == 0 and self.resumed_after == 0


def import_file(
    db: Database, path: Path, source: FileSource, **options: Unpack[ImportOptions]
) -> ImportSummary:
    """Import one export file; returns what happened (see :class:`ImportOptions`)."""
    started = time.perf_counter()
    workspace_id, default_region = options["workspace_id"], options["default_region"]
    chunk_size, on_progress = options.get("chunk_size", CHUNK), options.get("on_progress")
    scope, mapping = options.get("scope", ""), source.mapping
    try:
        counter = CountingRaw(path.open("rb", buffering=0))
    except OSError as exc:
        raise HubError(f"cannot read {path}: {exc.strerror or exc}") from None
    text = io.TextIOWrapper(
        io.BufferedReader(counter, 1 << 16), encoding=mapping.encoding, newline=""
    )
    with text:
        scope = f"{source.file_format}\0{mapping.name}\0{scope}\0{workspace_id}"
        checkpoint = Checkpoint.load(options["state_dir"], path, scope, kind=source.kind)
        resume_line = 0 if options.get("restart", False) else checkpoint.line
        rejects = RejectFile(
            options.get("rejects_path") or path.with_name(path.name + ".rejects.csv"),
            keep_bytes=checkpoint.rejects_size if resume_line else 0,
        )
        summary = ImportSummary(
            path, mapping.name, source.file_format, source.unit, resumed_after=resume_line
        )
        summary.done_line = resume_line
        pending: list[tuple[int, Touchpoint]] = []
        # One context for every event of the file (never mutated, so shared).
        context = {"import": {"mapping": mapping.name, "file": path.name}}
        batch = Batch(utcnow(), default_region, context)

        def reject(line: int, field_name: str, reason: str) -> None:
            summary.rejected += 1
            rejects.write(line, field_name, reason)

        def flush() -> None:
            if pending:
                with db.write() as session:
                    results = ingest(
                        session,
                        [touchpoint for _, touchpoint in pending],
                        workspace_id=workspace_id,
                        default_region=default_region,
                    )
                for result in results:
                    if result.status == "accepted":
                        summary.imported += 1
                    elif result.status == "duplicate":
                        summary.duplicates += 1
                    else:
                        reject(pending[result.index][0], result.field or "", result.reason or "")
                pending.clear()
            checkpoint.save(summary.done_line, rejects.size())
            if on_progress is not None:
                on_progress(counter.count)

        try:
            opened = source.open(text)
            summary.notes.extend(opened.notes)
            records = _after(opened.records, resume_line, summary)
            for outcome in opened.convert(records, batch):
                summary.units += 1
                if isinstance(outcome, Converted):
                    pending.append((outcome.line, outcome.touchpoint))
                elif isinstance(outcome, Refused):
                    reject(outcome.line, outcome.field, outcome.reason)
                else:
                    summary.skipped += 1
                    reasons = summary.skip_reasons
                    reasons[outcome.reason] = reasons.get(outcome.reason, 0) + 1
                summary.done_line = outcome.done
                if len(pending) >= chunk_size:
                    flush()
                    batch.received_at = utcnow()
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


def _after(records: Iterator[Record], resume_line: int, summary: ImportSummary) -> Iterator[Record]:
    """The records past the checkpoint, counted as rows read."""
    for record in records:
        if record[1] > resume_line:
            summary.rows += 1
            yield record


__all__ = [
    "CHUNK",
    "Batch",
    "Converted",
    "Converter",
    "FileSource",
    "ImportInterrupted",
    "ImportOptions",
    "ImportSummary",
    "Opened",
    "Outcome",
    "Refused",
    "Skipped",
    "import_file",
]
