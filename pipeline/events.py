"""Reading and replaying the event log: lookups, status listing, replay, pipeline counts.

An event's status is derived, never stored on the event: ``failed`` while an
:class:`EventFailure` quarantines it, ``pending`` while its batch (or its replay) is queued,
``processed`` once its batch is done. Why replay is safe to run twice: it only queues
``failed`` events that are not already queued; processed events are counted as skipped,
never processed again, so their effects are never doubled.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, func, or_, select, update
from sqlalchemy.orm import Session

from pipeline.models import (
    BATCH_DONE,
    BATCH_QUEUED,
    EVENT_FAILED,
    EVENT_PENDING,
    EVENT_PROCESSED,
    Batch,
    Event,
    EventFailure,
    new_batch,
)

REPLAY_BATCH_EVENTS = 500


@dataclass(frozen=True)
class EventRecord:
    """An event with its derived processing state."""

    event: Event
    status: str
    attempts: int
    error: str | None
    processed_at: datetime | None


def event_view(record: EventRecord) -> dict[str, Any]:
    """The stored envelope plus its processing state, as the API returns it."""
    event = record.event
    return {
        "message_id": event.message_id,
        "channel": event.channel,
        "type": event.type,
        "occurred_at": event.occurred_at.isoformat(),
        "received_at": event.received_at.isoformat(),
        "source": event.source,
        "identifiers": event.identifiers,
        "traits": event.traits,
        "properties": event.properties,
        "context": event.context,
        "status": record.status,
        "attempts": record.attempts,
        "error": record.error,
        "processed_at": record.processed_at.isoformat() if record.processed_at else None,
    }


def _with_state() -> Select[*tuple[Any, ...]]:
    return (
        select(
            Event,
            Batch.status,
            Batch.done_at,
            Batch.attempts,
            Batch.last_error,
            EventFailure.event_id,
            EventFailure.error,
            EventFailure.attempts,
            EventFailure.retry_batch_id,
        )
        .join(Batch, Batch.id == Event.batch_id)
        .outerjoin(EventFailure, EventFailure.event_id == Event.id)
    )


def _record(row: Any) -> EventRecord:
    event, batch_status, done_at, batch_attempts, batch_error, failed, error, attempts, retry = row
    if failed is not None:
        return EventRecord(event, EVENT_PENDING if retry else EVENT_FAILED, attempts, error, None)
    if batch_status == BATCH_DONE:
        return EventRecord(event, EVENT_PROCESSED, batch_attempts, None, done_at)
    return EventRecord(event, EVENT_PENDING, batch_attempts, batch_error, None)


def _status_is(status: str, workspace_id: str) -> ColumnElement[bool]:
    """The condition for a status, written so each is an index search, not a log scan.

    ``failed`` and ``pending`` go through the (few) failure and queued-batch rows;
    ``processed`` walks the log in id order (most events are processed).
    """
    unfailed = EventFailure.event_id.is_(None)
    if status == EVENT_FAILED:
        quarantined = select(EventFailure.event_id).where(
            EventFailure.workspace_id == workspace_id, EventFailure.retry_batch_id.is_(None)
        )
        return Event.id.in_(quarantined)
    if status == EVENT_PROCESSED:
        return and_(Batch.status == BATCH_DONE, unfailed)
    if status == EVENT_PENDING:
        queued = select(Batch.id).where(
            Batch.workspace_id == workspace_id, Batch.status == BATCH_QUEUED
        )
        retrying = select(EventFailure.event_id).where(
            EventFailure.workspace_id == workspace_id, EventFailure.retry_batch_id.is_not(None)
        )
        return or_(and_(Event.batch_id.in_(queued), unfailed), Event.id.in_(retrying))
    raise ValueError(f"unknown status {status!r}")


def get_event(session: Session, workspace_id: str, message_id: str) -> EventRecord | None:
    row = session.execute(
        _with_state().where(Event.workspace_id == workspace_id, Event.message_id == message_id)
    ).first()
    return _record(row) if row else None


def events_by_id(session: Session, workspace_id: str, ids: Sequence[int]) -> list[EventRecord]:
    """The events with these log ids, in the order given (ids not found are left out)."""
    if not ids:
        return []
    query = _with_state().where(Event.workspace_id == workspace_id, Event.id.in_(list(ids)))
    found = {record.event.id: record for record in map(_record, session.execute(query))}
    return [found[i] for i in ids if i in found]


def list_events(
    session: Session,
    workspace_id: str,
    *,
    status: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    after_id: int = 0,
    limit: int = 100,
) -> list[EventRecord]:
    """Events in log order, filtered; ``after_id`` pages through long lists."""
    query = _with_state().where(Event.workspace_id == workspace_id, Event.id > after_id)
    if status:
        query = query.where(_status_is(status, workspace_id))
    if since:
        query = query.where(Event.received_at >= since)
    if until:
        query = query.where(Event.received_at < until)
    return [_record(row) for row in session.execute(query.order_by(Event.id).limit(limit))]


@dataclass(frozen=True)
class ReplayResult:
    """How many events a replay sent back for processing, and how many it skipped."""

    requeued: int
    skipped_processed: int
    skipped_pending: int


def replay(
    session: Session,
    workspace_id: str,
    *,
    message_ids: list[str] | None = None,
    status: str | None = EVENT_FAILED,
    since: datetime | None = None,
    until: datetime | None = None,
    batch_events: int = REPLAY_BATCH_EVENTS,
) -> ReplayResult:
    """Queue matching failed events for processing again (idempotent; see module doc).

    The failed events go out in new batches whose failure rows point at them
    (``retry_batch_id``); the relay publishes them like any fresh batch.
    """
    conditions: list[ColumnElement[bool]] = [Event.workspace_id == workspace_id]
    if message_ids:
        conditions.append(Event.message_id.in_(message_ids))
    if status:
        conditions.append(_status_is(status, workspace_id))
    if since:
        conditions.append(Event.received_at >= since)
    if until:
        conditions.append(Event.received_at < until)
    counts = {EVENT_FAILED: 0, EVENT_PROCESSED: 0, EVENT_PENDING: 0}
    failed: list[int] = []
    for row in session.execute(_with_state().where(*conditions).order_by(Event.id)):
        record = _record(row)
        counts[record.status] += 1
        if record.status == EVENT_FAILED:
            failed.append(record.event.id)
    for first in range(0, len(failed), batch_events):
        chunk = failed[first : first + batch_events]
        batch_id = new_batch(session, workspace_id, len(chunk), replay=True)
        session.execute(
            update(EventFailure)
            .where(EventFailure.event_id.in_(chunk), EventFailure.retry_batch_id.is_(None))
            .values(retry_batch_id=batch_id),
            execution_options={"synchronize_session": False},
        )
    return ReplayResult(counts[EVENT_FAILED], counts[EVENT_PROCESSED], counts[EVENT_PENDING])


def status_counts(session: Session) -> dict[str, int]:
    """Events per status across workspaces (for metrics), from batch and failure rows only.

    Replay batches hold events already counted in their original (done) batch, so only
    appended batches are summed; failure rows then move events from processed to failed
    (or back to pending while their replay is queued).
    """
    by_batch = dict(
        session.execute(
            select(Batch.status, func.coalesce(func.sum(Batch.event_count), 0))
            .where(Batch.replay.is_(False))
            .group_by(Batch.status)
        ).all()
    )
    quarantined, retrying = (
        int(n)
        for n in session.execute(
            select(func.count(EventFailure.event_id), func.count(EventFailure.retry_batch_id))
        ).one()
    )
    return {
        EVENT_PENDING: int(by_batch.get(BATCH_QUEUED, 0)) + retrying,
        EVENT_PROCESSED: int(by_batch.get(BATCH_DONE, 0)) - quarantined,
        EVENT_FAILED: quarantined - retrying,
    }


def backlog(session: Session) -> tuple[int, datetime | None]:
    """Events not yet processed and the creation time of the oldest queued batch."""
    count, oldest = session.execute(
        select(func.coalesce(func.sum(Batch.event_count), 0), func.min(Batch.created_at)).where(
            Batch.status == BATCH_QUEUED
        )
    ).one()
    if isinstance(oldest, str):  # SQLite aggregate bypasses the column type
        oldest = datetime.fromisoformat(oldest)
    return int(count), oldest


def recent_batch_latency(session: Session, limit: int = 200) -> float | None:
    """Mean seconds from batch creation to done over the latest finished batches."""
    rows = session.execute(
        select(Batch.created_at, Batch.done_at)
        .where(Batch.done_at.is_not(None))
        .order_by(Batch.id.desc())
        .limit(limit)
    ).all()
    spans = [(done - created).total_seconds() for created, done in rows if done is not None]
    return sum(spans) / len(spans) if spans else None
