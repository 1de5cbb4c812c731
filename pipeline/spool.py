"""Spool mode: requests stored as received, expanded into events by a worker.

Why: with ``ECRM_INGEST_MODE=validate`` (the default) the API maps, validates, normalizes
and appends every event before it answers, 30-60 µs of Python per event, so HTTP ingest
runs at a few per cent of what the HTTP stack alone could take. Gateways built for
volume (Segment's, RudderStack's) store the request after a check of its shape and do the
rest downstream. In spool mode the API does the same: the request body goes into
``spooled_requests`` under one batch row per group commit, and that batch is the outbox
row the relay publishes, leases and sweeps like any other. The worker that takes the batch
first expands it (:func:`expand`): the messages are mapped and validated by the same code
as in ``validate`` mode, appended to the event log under the same batch, messages refused
only now are kept in ``ingest_rejections``, and the spooled rows are deleted, all in one
transaction. Then the batch is processed as usual.

What the client gives up: its answer knows the shape refusals only (not a bad timestamp,
not whether a message was a duplicate), and ``GET /v1/events/{message_id}`` finds an event
only once it is expanded. Nothing accepted is lost: the request is durable before the
answer, and a crash at any point leaves it spooled or expanded, never half of each.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import delete, func, insert, select
from sqlalchemy.orm import Session

from pipeline.db import in_list
from pipeline.envelope import utcnow
from pipeline.ingest import append, prepare
from pipeline.models import BATCHES, REJECTIONS, SPOOLED, new_batch

#: (parsed body, received at, positions to skip, body size) -> (touchpoints, their
#: positions, refusals ``{"index", "field", "reason"}``)
Mapper = Callable[
    [Any, datetime, Collection[int], int],
    tuple[list[dict[str, Any]], list[int], list[dict[str, Any]]],
]


@dataclass(frozen=True)
class SpoolItem:
    """One request to spool: its body as received and what the door refused."""

    kind: str
    body: bytes
    received_at: datetime
    skip: list[int]
    #: messages that passed the door
    count: int


@dataclass(frozen=True)
class Expanded:
    """What expanding some batches did."""

    requests: int = 0
    events: int = 0
    duplicates: int = 0
    rejected: int = 0


def spool(session: Session, workspace_id: str, items: Sequence[SpoolItem]) -> int:
    """Store ``items`` under one new batch (due at once); the batch's id."""
    batch_id = new_batch(session, workspace_id, sum(item.count for item in items))
    session.execute(
        insert(SPOOLED),
        [
            {
                "workspace_id": workspace_id,
                "batch_id": batch_id,
                "kind": item.kind,
                "received_at": item.received_at,
                "body": item.body,
                "skip": item.skip,
            }
            for item in items
        ],
    )
    return batch_id


def spooled(session: Session, batch_ids: Sequence[int]) -> list[int]:
    """Which of ``batch_ids`` still have spooled requests (a cheap read, index only)."""
    if not batch_ids:
        return []
    query = select(SPOOLED.c.batch_id).where(in_list(session, SPOOLED.c.batch_id, list(batch_ids)))
    return sorted(set(session.execute(query.distinct()).scalars()))


def expand(
    session: Session,
    batch_ids: Sequence[int],
    mappers: Mapping[str, Mapper],
    default_region: str,
) -> Expanded:
    """Expand the spooled requests of ``batch_ids`` into their batches' events.

    The rows are locked (PostgreSQL), so a batch taken by two workers at once (a broker
    redelivery) is expanded by one: the other finds the rows gone when the first commits.
    """
    c = SPOOLED.c
    query = select(c.id, c.workspace_id, c.batch_id, c.kind, c.received_at, c.body, c.skip)
    query = query.where(in_list(session, c.batch_id, list(batch_ids))).order_by(c.id)
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update()
    by_batch: dict[int, list[Any]] = {}
    for row in session.execute(query):
        by_batch.setdefault(row.batch_id, []).append(row)
    dialect = session.get_bind().dialect.name
    requests = events = duplicates = rejected = 0
    now = utcnow()
    for batch_id, rows in by_batch.items():
        touchpoints: list[dict[str, Any]] = []
        origin: list[tuple[Any, int]] = []
        refusals: list[dict[str, Any]] = []
        for row in rows:
            body = bytes(row.body)
            parsed = orjson.loads(body)  # it was parsed at the door
            mapped, positions, refused = mappers[row.kind](
                parsed, row.received_at, frozenset(row.skip or ()), len(body)
            )
            touchpoints += mapped
            origin += [(row, position) for position in positions]
            refusals += [
                _rejection(row, r["index"], _message_id(parsed, r["index"]), r, now)
                for r in refused
            ]
        workspace_id = rows[0].workspace_id
        results = append(
            session,
            workspace_id,
            prepare(touchpoints, default_region, dialect),
            batch_id=batch_id,
        )
        for result in results:
            if result.status == "accepted":
                events += 1
            elif result.status == "duplicate":
                duplicates += 1
            else:
                row, position = origin[result.index]
                problem = {"field": result.field, "reason": result.reason}
                refusals.append(_rejection(row, position, result.message_id, problem, now))
        if refusals:
            session.execute(insert(REJECTIONS), refusals)
        session.execute(delete(SPOOLED).where(c.batch_id == batch_id))
        requests += len(rows)
        rejected += len(refusals)
    return Expanded(requests, events, duplicates, rejected)


def backlog(session: Session, workspace_id: str) -> dict[str, Any]:
    """Spooled requests not yet expanded: how many, their messages, the oldest's time."""
    c = SPOOLED.c
    requests, oldest = session.execute(
        select(func.count(), func.min(c.received_at)).where(c.workspace_id == workspace_id)
    ).one()
    batches = select(c.batch_id).where(c.workspace_id == workspace_id).distinct()
    messages = session.execute(
        select(func.coalesce(func.sum(BATCHES.c.event_count), 0)).where(BATCHES.c.id.in_(batches))
    ).scalar_one()
    if isinstance(oldest, str):  # SQLite's aggregate loses the column type
        oldest = datetime.fromisoformat(oldest)
    return {
        "requests": int(requests),
        "messages": int(messages),
        "oldest_received_at": oldest.isoformat() if oldest else None,
    }


def rejections(
    session: Session, workspace_id: str, *, limit: int = 100, before: int | None = None
) -> list[dict[str, Any]]:
    """Messages refused at expansion, newest first (``before``: ids below it, to page)."""
    r = REJECTIONS.c
    query = select(REJECTIONS).where(r.workspace_id == workspace_id)
    if before is not None:
        query = query.where(r.id < before)
    rows = session.execute(query.order_by(r.id.desc()).limit(limit)).mappings()
    return [
        {
            "id": row["id"],
            "batch_id": row["batch_id"],
            "index": row["position"],
            "message_id": row["message_id"],
            "field": row["field"],
            "reason": row["reason"],
            "received_at": row["received_at"].isoformat(),
            "rejected_at": row["rejected_at"].isoformat(),
        }
        for row in rows
    ]


def _message_id(body: Any, position: int) -> str | None:
    """The ``messageId`` a refused message carried, if it is readable."""
    try:
        value = body["batch"][position].get("messageId")
    except (KeyError, IndexError, TypeError, AttributeError):
        return None
    return str(value)[:255] if isinstance(value, str | int) else None


def _rejection(
    row: Any, position: int, message_id: str | None, problem: Mapping[str, Any], now: datetime
) -> dict[str, Any]:
    return {
        "workspace_id": row.workspace_id,
        "batch_id": row.batch_id,
        "received_at": row.received_at,
        "position": position,
        "message_id": message_id,
        "field": str(problem.get("field") or "message")[:100],
        "reason": str(problem.get("reason") or "refused"),
        "rejected_at": now,
    }


__all__ = [
    "Expanded",
    "Mapper",
    "SpoolItem",
    "backlog",
    "expand",
    "rejections",
    "spool",
    "spooled",
]
