"""The event log's side of processing a batch: load it, then record each event's outcome.

Why the pipeline owns only this part: what processing *means* (identity, rules) lives in
other packages; here we guarantee the bookkeeping that makes processing exactly-once in
its effects: only ``pending`` events are handed out, and their status changes in the same
transaction as the effects, so a killed worker leaves them ``pending`` for the next try.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session

from pipeline.envelope import utcnow
from pipeline.errors import TransientError
from pipeline.models import (
    BATCH_DONE,
    EVENT_FAILED,
    EVENT_PENDING,
    EVENT_PROCESSED,
    EVENTS,
    Batch,
    Event,
)


@dataclass(frozen=True)
class StoredEvent:
    """An event as processing sees it: plain data, already normalized."""

    id: int
    workspace_id: str
    message_id: str
    channel: str
    type: str
    occurred_at: datetime
    identifiers: dict[str, str]
    traits: dict[str, Any]
    properties: dict[str, Any]


@dataclass(frozen=True)
class BatchWork:
    """The pending events of one batch."""

    batch_id: int
    workspace_id: str
    events: list[StoredEvent]


def load_batch(session: Session, batch_id: int) -> BatchWork | None:
    """Lock the batch and return its pending events; ``None`` if it is done or unknown.

    On PostgreSQL the batch row is locked ``FOR UPDATE`` so two workers handed the same
    batch (a republished copy) run one after the other and the second finds nothing to do.
    SQLite's ``BEGIN IMMEDIATE`` serializes writers already.
    """
    query = select(Batch).where(Batch.id == batch_id)
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update()
    batch = session.scalars(query).first()
    if batch is None or batch.status == BATCH_DONE:
        return None
    rows = session.execute(
        select(
            Event.id,
            Event.workspace_id,
            Event.message_id,
            Event.channel,
            Event.type,
            Event.occurred_at,
            Event.identifiers,
            Event.traits,
            Event.properties,
        )
        .where(Event.batch_id == batch_id, Event.status == EVENT_PENDING)
        .order_by(Event.id)
    ).all()
    return BatchWork(batch_id, batch.workspace_id, [StoredEvent(*row) for row in rows])


def complete_batch(
    session: Session,
    batch_id: int,
    profile_ids: Mapping[int, str],
    failures: Mapping[int, str] | None = None,
    *,
    done: bool = True,
    now: datetime | None = None,
) -> None:
    """Mark events processed (with their profile) or failed, and (``done``) the batch done.

    Raises :class:`TransientError` if any of the events is no longer pending: someone else
    processed it meanwhile, and the caller's transaction must not count it again.
    """
    now = now or utcnow()
    if profile_ids:
        result = session.execute(
            update(EVENTS)
            .where(EVENTS.c.id == bindparam("event_id"), EVENTS.c.status == EVENT_PENDING)
            .values(status=EVENT_PROCESSED, profile_id=bindparam("profile_id"), processed_at=now),
            [{"event_id": eid, "profile_id": pid} for eid, pid in profile_ids.items()],
        )
        if result.rowcount != len(profile_ids):  # type: ignore[attr-defined]
            raise TransientError("events of the batch were processed concurrently")
    if failures:
        mark_failed(session, failures)
    if not done:
        return
    session.execute(
        update(Batch).where(Batch.id == batch_id).values(status=BATCH_DONE, done_at=now),
        execution_options={"synchronize_session": False},
    )


def mark_failed(session: Session, failures: Mapping[int, str]) -> None:
    """Quarantine events with their error (kept, listed, replayable)."""
    session.execute(
        update(EVENTS)
        .where(EVENTS.c.id == bindparam("event_id"))
        .values(status=EVENT_FAILED, error=bindparam("error"), attempts=Event.attempts + 1),
        [{"event_id": eid, "error": error[:2000]} for eid, error in failures.items()],
    )


def record_batch_error(session: Session, batch_id: int, error: str) -> int:
    """Count a failed attempt on a batch (it stays queued; the sweep retries it later)."""
    batch = session.get(Batch, batch_id)
    if batch is None:
        return 0
    batch.attempts += 1
    batch.last_error = error[:2000]
    return batch.attempts
