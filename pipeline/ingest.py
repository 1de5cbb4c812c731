"""Ingest: validate, normalize and append touchpoints to the event log, idempotently.

Why per-event results: a connector hands over many events at once and one bad neighbour
must never cost the others; every event comes back ``accepted``, ``duplicate`` (its
``message_id`` is already in the log, so re-sending never double-counts) or ``rejected``
with the field and the reason.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import orjson
import pydantic
from sqlalchemy import text
from sqlalchemy.orm import Session

from pipeline.db import dialect_insert
from pipeline.envelope import Touchpoint
from pipeline.errors import ValidationError
from pipeline.identifiers import normalize_identifiers
from pipeline.models import BATCHES, EVENTS, new_batch

Outcome = Literal["accepted", "duplicate", "rejected"]


@dataclass(frozen=True)
class IngestResult:
    """What became of one event handed to :func:`ingest`."""

    index: int
    message_id: str | None
    status: Outcome
    field: str | None = None
    reason: str | None = None

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
    results: list[IngestResult | None] = []
    rows: list[dict[str, Any]] = []
    row_index: dict[str, int] = {}
    for index, item in enumerate(touchpoints):
        message_id = item.message_id if isinstance(item, Touchpoint) else _raw_id(item)
        try:
            touchpoint = item if isinstance(item, Touchpoint) else Touchpoint.model_validate(item)
            identifiers = normalize_identifiers(touchpoint.identifiers, default_region)
        except pydantic.ValidationError as exc:
            field, reason = _pydantic_problem(exc)
            results.append(IngestResult(index, message_id, "rejected", field, reason))
            continue
        except ValidationError as exc:
            results.append(IngestResult(index, message_id, "rejected", exc.field, exc.message))
            continue
        if touchpoint.message_id in row_index:
            results.append(IngestResult(index, touchpoint.message_id, "duplicate"))
            continue
        row_index[touchpoint.message_id] = index
        results.append(None)
        rows.append(
            {
                "workspace_id": workspace_id,
                "message_id": touchpoint.message_id,
                "channel": touchpoint.channel.value,
                "type": touchpoint.type,
                "occurred_at": touchpoint.occurred_at,
                "received_at": touchpoint.received_at,
                "source": touchpoint.source,
                "identifiers": identifiers,
                "traits": touchpoint.traits,
                "properties": touchpoint.properties,
                "context": touchpoint.context,
            }
        )
    inserted = _append(session, workspace_id, rows) if rows else set()
    for message_id, index in row_index.items():
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
    accepted = sum(r.status == "accepted" for r in results)
    duplicates = sum(r.status == "duplicate" for r in results)
    rejected = list(refused)
    for result, index in zip(results, positions, strict=True):
        if result.status == "rejected":
            rejected.append({"index": index, "field": result.field, "reason": result.reason})
    rejected.sort(key=lambda item: item["index"])
    return accepted, duplicates, rejected


def _append(session: Session, workspace_id: str, rows: list[dict[str, Any]]) -> set[str]:
    """Insert the rows under one new batch; returns the message ids that were new."""
    batch_id = new_batch(session, workspace_id, len(rows))
    if session.get_bind().dialect.name == "postgresql":
        inserted = _insert_recordset(session, workspace_id, batch_id, rows)
    else:
        for row in rows:
            row["batch_id"] = batch_id
        stmt = (
            dialect_insert(session)(EVENTS)
            .on_conflict_do_nothing(index_elements=["workspace_id", "message_id"])
            .returning(EVENTS.c.message_id)
        )
        inserted = set(session.execute(stmt, rows).scalars())
    if len(inserted) < len(rows):  # duplicates of events already in the log
        batch = BATCHES.c.id == batch_id
        if inserted:
            session.execute(BATCHES.update().where(batch).values(event_count=len(inserted)))
        else:
            session.execute(BATCHES.delete().where(batch))
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


def _insert_recordset(
    session: Session, workspace_id: str, batch_id: int, rows: list[dict[str, Any]]
) -> set[str]:
    """PostgreSQL: the rows travel as one JSON document, expanded by the server.

    Why: SQLAlchemy's multi-row ``VALUES`` makes a statement thousands of parameters long,
    which psycopg parses afresh on every call (too long for its cache), and arrays per
    column cost as much again in psycopg's escaping. One ``orjson`` document (times as
    RFC 3339 with their offset) is built in C, and this statement text is constant and
    carries no values. Measured with py-spy: a third of the API's time on PostgreSQL.
    """
    document = orjson.dumps([{field: row[field] for field in _ROW_FIELDS} for row in rows])
    params = {"workspace_id": workspace_id, "batch_id": batch_id, "rows": document.decode()}
    return set(session.execute(_RECORDSET_INSERT, params).scalars())


def _raw_id(item: Mapping[str, Any]) -> str | None:
    value = item.get("message_id")
    return value if isinstance(value, str) else None
