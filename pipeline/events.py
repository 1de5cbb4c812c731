"""Reading and replaying the event log: lookups, failed-event listing, replay.

Why replay is safe to run twice: it only sends ``failed`` events back to ``pending``
(unbatched, so the relay picks them up); events already processed are counted as skipped,
never processed again, so their effects are never doubled.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from pipeline.models import EVENT_FAILED, EVENT_PENDING, EVENT_PROCESSED, Batch, Event


def event_view(event: Event) -> dict[str, Any]:
    """The stored envelope plus its processing state, as the API returns it."""
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
        "status": event.status,
        "profile_id": event.profile_id,
        "attempts": event.attempts,
        "error": event.error,
        "processed_at": event.processed_at.isoformat() if event.processed_at else None,
    }


def get_event(session: Session, workspace_id: str, message_id: str) -> Event | None:
    return session.scalars(
        select(Event).where(Event.workspace_id == workspace_id, Event.message_id == message_id)
    ).first()


def list_events(
    session: Session,
    workspace_id: str,
    *,
    status: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    after_id: int = 0,
    limit: int = 100,
) -> list[Event]:
    """Events in log order, filtered; ``after_id`` pages through long lists."""
    query = select(Event).where(Event.workspace_id == workspace_id, Event.id > after_id)
    if status:
        query = query.where(Event.status == status)
    if since:
        query = query.where(Event.received_at >= since)
    if until:
        query = query.where(Event.received_at < until)
    return list(session.scalars(query.order_by(Event.id).limit(limit)))


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
) -> ReplayResult:
    """Send matching failed events back for processing (idempotent; see module doc)."""
    conditions = [Event.workspace_id == workspace_id]
    if message_ids:
        conditions.append(Event.message_id.in_(message_ids))
    if status:
        conditions.append(Event.status == status)
    if since:
        conditions.append(Event.received_at >= since)
    if until:
        conditions.append(Event.received_at < until)
    counts = dict(
        session.execute(
            select(Event.status, func.count()).where(*conditions).group_by(Event.status)
        ).all()
    )
    session.execute(
        update(Event)
        .where(*conditions, Event.status == EVENT_FAILED)
        .values(status=EVENT_PENDING, batch_id=None, error=None),
        execution_options={"synchronize_session": False},
    )
    return ReplayResult(
        requeued=int(counts.get(EVENT_FAILED, 0)),
        skipped_processed=int(counts.get(EVENT_PROCESSED, 0)),
        skipped_pending=int(counts.get(EVENT_PENDING, 0)),
    )


def status_counts(session: Session) -> dict[str, int]:
    """Events per status across workspaces (for metrics)."""
    rows = session.execute(select(Event.status, func.count()).group_by(Event.status)).all()
    return {status: int(count) for status, count in rows}


def backlog(session: Session) -> tuple[int, datetime | None]:
    """Pending events and the receive time of the oldest one (queue lag)."""
    count, oldest = session.execute(
        select(func.count(), func.min(Event.received_at)).where(Event.status == EVENT_PENDING)
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
