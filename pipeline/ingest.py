"""Ingest: validate, normalize and append touchpoints to the event log, idempotently.

Why per-event results: a connector hands over many events at once and one bad neighbour
must never cost the others; every event comes back ``accepted``, ``duplicate`` (its
``message_id`` is already in the log, so re-sending never double-counts) or ``rejected``
with the field and the reason.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any, Literal

import orjson
import pydantic
from sqlalchemy import text
from sqlalchemy.orm import Session

from pipeline.db import json_text, sqlite_time
from pipeline.envelope import Touchpoint, touchpoint_values, utcnow
from pipeline.errors import ValidationError
from pipeline.identifiers import normalize_identifiers
from pipeline.models import BATCH_DONE, BATCHES, new_batch

Outcome = Literal["accepted", "duplicate", "rejected"]


@dataclass(frozen=True)
class IngestResult:
    """What became of one event handed to :func:`ingest`."""

    index: int
    message_id: str | None
    status: Outcome
    field: str | None = None
    reason: str | None = None

    def __init__(
        self,
        index: int,
        message_id: str | None,
        status: Outcome,
        field: str | None = None,
        reason: str | None = None,
    ) -> None:
        # What the generated __init__ does, without its object.__setattr__ per field: one
        # result per event (two through the group writer) cost 2 µs each; still frozen.
        values = self.__dict__
        values["index"], values["message_id"], values["status"] = index, message_id, status
        values["field"], values["reason"] = field, reason

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"index": self.index, "status": self.status}
        if self.message_id is not None:
            out["message_id"] = self.message_id
        if self.field is not None:
            out["field"] = self.field
        if self.reason is not None:
            out["reason"] = self.reason
        return out


def _pydantic_problem(error: pydantic.ValidationError) -> tuple[str, str]:
    first = error.errors()[0]
    field = ".".join(str(part) for part in first["loc"]) or "body"
    return field, first["msg"]


def ingest(
    session: Session,
    touchpoints: Iterable[Touchpoint | Mapping[str, Any]],
    *,
    workspace_id: str,
    default_region: str,
) -> list[IngestResult]:
    """Append valid, new touchpoints to the event log in the caller's transaction.

    The new events are appended as one :class:`~pipeline.models.Batch` (the outbox row);
    the caller commits, then the relay publishes the batch.
    """
    dialect = session.get_bind().dialect.name
    return append(session, workspace_id, prepare(touchpoints, default_region, dialect))


@dataclass
class Prepared:
    """Touchpoints validated, normalized and encoded for one dialect, not yet appended.

    Why a step of its own: all of this is CPU work that needs no database, so a caller
    that holds SQLite's single write lock for its transaction (the API's group writer) does
    it before taking the lock, and holds the lock only for the insert.
    """

    dialect: str
    #: per touchpoint: its result if already decided (rejected, duplicate in the request)
    results: list[IngestResult | None]
    #: message id -> index of the touchpoint that is to be appended
    row_index: dict[str, int]
    #: the rows in the dialect's form (see :func:`_encode_sqlite`, :func:`_encode_postgres`)
    encoded: Any

    @property
    def rows(self) -> int:
        """How many rows are to be appended (one per message id)."""
        return len(self.row_index)


def prepare(
    touchpoints: Iterable[Touchpoint | Mapping[str, Any]], default_region: str, dialect: str
) -> Prepared:
    """Validate, normalize and encode; the touchpoints' rows for :func:`append`."""
    results: list[IngestResult | None] = []
    rows: list[_Row] = []
    row_index: dict[str, int] = {}
    for index, item in enumerate(touchpoints):
        if isinstance(item, Touchpoint):
            message_id: str | None = item.message_id
            values: dict[str, Any] | None = item.__dict__
        elif not isinstance(item, Mapping):  # a library caller's list item of another type
            reason = f"a touchpoint must be an object, not {type(item).__name__}"
            results.append(IngestResult(index, None, "rejected", "touchpoint", reason))
            continue
        else:
            message_id, values = _raw_id(item), touchpoint_values(item)
        try:
            if values is None:  # not the plain common case: the model accepts or explains
                values = Touchpoint.model_validate(item).__dict__
            identifiers = normalize_identifiers(values["identifiers"], default_region)
        except pydantic.ValidationError as exc:
            field, reason = _pydantic_problem(exc)
            results.append(IngestResult(index, message_id, "rejected", field, reason))
            continue
        except ValidationError as exc:
            results.append(IngestResult(index, message_id, "rejected", exc.field, exc.message))
            continue
        message_id = values["message_id"]
        if message_id in row_index:
            results.append(IngestResult(index, message_id, "duplicate"))
            continue
        row_index[message_id] = index
        results.append(None)
        channel = values["channel"]
        rows.append(
            (
                message_id,
                channel if type(channel) is str else channel.value,
                values["type"],
                values["occurred_at"],
                values["received_at"],
                values["source"],
                identifiers,
                values["traits"],
                values["properties"],
                values["context"],
            )
        )
    encode = _encode_postgres if dialect == "postgresql" else _encode_sqlite
    return Prepared(dialect, results, row_index, encode(rows) if rows else None)


def append(
    session: Session, workspace_id: str, prepared: Prepared, *, batch_id: int | None = None
) -> list[IngestResult]:
    """Append prepared rows under one new batch; every touchpoint's result, in order.

    ``batch_id``: under that (queued) batch instead, whose count becomes the new rows
    (a spooled request's batch, see :mod:`pipeline.spool`).
    """
    if batch_id is not None and not prepared.rows:
        _settle_count(session, batch_id, 0)
    inserted = _append(session, workspace_id, prepared, batch_id) if prepared.rows else set()
    results = list(prepared.results)
    for message_id, index in prepared.row_index.items():
        status: Outcome = "accepted" if message_id in inserted else "duplicate"
        results[index] = IngestResult(index, message_id, status)
    return [r for r in results if r is not None]


def request_outcome(
    results: Sequence[IngestResult], positions: Sequence[int], refused: Sequence[dict[str, Any]]
) -> tuple[int, int, list[dict[str, Any]]]:
    """(accepted, duplicates, every rejection sorted by index) for a request's items.

    ``results`` are ingest's answers for the items at ``positions``; ``refused`` are the
    items a connector rejected before ingest (each ``{"index", "field", "reason"}``).
    """
    accepted = duplicates = 0
    rejected = list(refused)
    for result, index in zip(results, positions, strict=True):
        status = result.status
        if status == "accepted":
            accepted += 1
        elif status == "duplicate":
            duplicates += 1
        elif status == "rejected":
            rejected.append({"index": index, "field": result.field, "reason": result.reason})
    rejected.sort(key=lambda item: item["index"])
    return accepted, duplicates, rejected


#: an event row: the values of ``_ROW_FIELDS``, in that order
_Row = tuple[str, str, str, datetime, datetime, str, Any, Any, Any, Any]
_ROW_FIELDS = (
    "message_id",
    "channel",
    "type",
    "occurred_at",
    "received_at",
    "source",
    "identifiers",
    "traits",
    "properties",
    "context",
)


def _append(
    session: Session, workspace_id: str, prepared: Prepared, batch_id: int | None = None
) -> set[str]:
    """Insert the rows under one new batch (or ``batch_id``); the message ids that were new."""
    dialect = session.get_bind().dialect.name
    if dialect != prepared.dialect:
        raise ValueError(f"rows prepared for {prepared.dialect}, appended on {dialect}")
    given = batch_id is not None
    if batch_id is None:
        batch_id = new_batch(session, workspace_id, prepared.rows)
    if dialect == "postgresql":
        inserted = _insert_recordset(session, workspace_id, batch_id, prepared.encoded)
    else:
        inserted = _insert_sqlite(session, workspace_id, batch_id, prepared.encoded)
    if given:
        _settle_count(session, batch_id, len(inserted))
    elif len(inserted) < prepared.rows:  # duplicates of events already in the log
        batch = BATCHES.c.id == batch_id
        if inserted:
            session.execute(BATCHES.update().where(batch).values(event_count=len(inserted)))
        else:
            session.execute(BATCHES.delete().where(batch))
    return inserted


def _settle_count(session: Session, batch_id: int, events: int) -> None:
    """A given batch now holds ``events`` events; with none it is done (nothing to do)."""
    values: dict[str, Any] = {"event_count": events}
    if not events:
        values.update(status=BATCH_DONE, done_at=utcnow())
    session.execute(BATCHES.update().where(BATCHES.c.id == batch_id).values(**values))


#: most rows per SQLite statement: 12 parameters each, well under SQLite's 32,766
_SQLITE_ROWS = 512


@lru_cache(maxsize=16)
def _sqlite_insert(rows: int) -> str:
    """The statement for ``rows`` rows: only placeholders vary, never values."""
    values = ",".join(["(?,?,?,?,?,?,?,?,?,?,?,?)"] * rows)
    return _SQLITE_INSERT.format(values=values)


_SQLITE_INSERT = (
    "INSERT INTO events (workspace_id, message_id, channel, type, occurred_at, received_at,"
    " source, identifiers, traits, properties, context, batch_id) VALUES {values}"
    " ON CONFLICT (workspace_id, message_id) DO NOTHING RETURNING message_id"
)


def _encode_sqlite(rows: list[_Row]) -> list[tuple[Any, ...]]:
    """Each row's ten values as SQLite stores them (text times, JSON text).

    Why not ``insert(EVENTS)`` with a list of dicts: SQLAlchemy then runs a Python
    processor for each of the twelve values of every row (times, JSON) and rebuilds the
    parameters, a third of the API's CPU per event (measured with py-spy). Here each value
    is converted once, by the same functions the column types use (:func:`sqlite_time`,
    :func:`json_text`).
    """
    encoded: list[tuple[Any, ...]] = []
    # a request's events share one received_at (often occurred_at too): formatted once
    last_occurred = last_received = None
    occurred_text = received_text = ""
    for mid, channel, type_, occurred, received, source, ids, traits, props, ctx in rows:
        if occurred is not last_occurred:
            last_occurred, occurred_text = occurred, sqlite_time(occurred)
        if received is not last_received:
            last_received = received
            received_text = occurred_text if received is occurred else sqlite_time(received)
        encoded.append(
            (
                mid,
                channel,
                type_,
                occurred_text,
                received_text,
                source,
                json_text(ids),
                json_text(traits) if traits else "{}",
                json_text(props) if props else "{}",
                json_text(ctx) if ctx else "{}",
            )
        )
    return encoded


def _insert_sqlite(
    session: Session, workspace_id: str, batch_id: int, rows: list[tuple[Any, ...]]
) -> set[str]:
    """SQLite: multi-row ``INSERT … RETURNING`` of rows encoded by :func:`_encode_sqlite`.

    Statements hold a power of two of rows (300 rows: 256, 32, 8 and 4), so the few
    statement texts stay in sqlite3's statement cache: preparing one anew cost about as
    much as inserting its rows (measured, 7.5 µs per row of the statement).
    """
    connection = session.connection()
    inserted: set[str] = set()
    first = 0
    while first < len(rows):
        size = min(_SQLITE_ROWS, 1 << ((len(rows) - first).bit_length() - 1))
        params: list[Any] = []
        for row in rows[first : first + size]:
            params.append(workspace_id)
            params += row
            params.append(batch_id)
        first += size
        result = connection.exec_driver_sql(_sqlite_insert(size), tuple(params))
        inserted.update(result.scalars())
    return inserted


_RECORDSET_INSERT = text(
    "INSERT INTO events (workspace_id, message_id, channel, type, occurred_at, received_at,"
    " source, identifiers, traits, properties, context, batch_id)"
    " SELECT :workspace_id, r.message_id, r.channel, r.type, r.occurred_at, r.received_at,"
    " r.source, r.identifiers, r.traits, r.properties, r.context, :batch_id"
    " FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS r(message_id text, channel text,"
    " type text, occurred_at timestamptz, received_at timestamptz, source text,"
    " identifiers jsonb, traits jsonb, properties jsonb, context jsonb)"
    " ON CONFLICT (workspace_id, message_id) DO NOTHING RETURNING message_id"
)


def _encode_postgres(rows: list[_Row]) -> str:
    """The rows as one JSON document, for :func:`_insert_recordset`.

    Why: SQLAlchemy's multi-row ``VALUES`` makes a statement thousands of parameters long,
    which psycopg parses afresh on every call (too long for its cache), and arrays per
    column cost as much again in psycopg's escaping. One ``orjson`` document (times as
    RFC 3339 with their offset) is built in C. Measured with py-spy: a third of the API's
    time on PostgreSQL.
    """
    return orjson.dumps([dict(zip(_ROW_FIELDS, row, strict=True)) for row in rows]).decode()


def _insert_recordset(
    session: Session, workspace_id: str, batch_id: int, document: str
) -> set[str]:
    """PostgreSQL: the rows travel as one document, expanded by the server; this statement
    text is constant and carries no values."""
    params = {"workspace_id": workspace_id, "batch_id": batch_id, "rows": document}
    return set(session.execute(_RECORDSET_INSERT, params).scalars())


def _raw_id(item: Mapping[str, Any]) -> str | None:
    value = item.get("message_id")
    return value if isinstance(value, str) else None
