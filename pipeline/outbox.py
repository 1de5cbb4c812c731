"""The outbox relay: turn unbatched events into batches and put their ids on the broker.

Why this shape: ingest only appends events (``batch_id`` NULL) in its own transaction, so
accepting an event never waits for the broker. The relay groups them into batches of up
to ``batch_size`` (one broker message carries many events: the broker is not the limit),
commits, then publishes. Publishing after commit means a crash in between leaves a *due*
batch, which :func:`republish_due` sends again once its lease expires; processing is
idempotent, so a batch published twice is processed once. The database, not the broker,
is the truth: whatever the broker loses, the sweep finds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from pipeline.db import Database, in_list
from pipeline.envelope import utcnow
from pipeline.models import BATCH_DONE, BATCH_QUEUED, EVENT_FAILED, EVENT_PENDING, Batch, Event

log = structlog.get_logger(__name__)

Publish = Callable[[int], None]
#: after this many failed processing attempts a batch's events are quarantined as failed
MAX_BATCH_ATTEMPTS = 8
_MAX_BATCHES_PER_TRANSACTION = 20


@dataclass(frozen=True)
class RelayStats:
    """What one relay pass did."""

    created: int = 0
    republished: int = 0
    published: int = 0
    quarantined: int = 0


def claim_unbatched(
    session: Session, *, batch_size: int, lease_seconds: float, now: datetime | None = None
) -> list[int]:
    """Group unbatched pending events into new batches; returns their ids (caller commits)."""
    now = now or utcnow()
    batch_ids: list[int] = []
    postgres = session.get_bind().dialect.name == "postgresql"
    while len(batch_ids) < _MAX_BATCHES_PER_TRANSACTION:
        query = (
            select(Event.id, Event.workspace_id)
            .where(Event.batch_id.is_(None), Event.status == EVENT_PENDING)
            .order_by(Event.id)
            .limit(batch_size)
        )
        if postgres:
            query = query.with_for_update(skip_locked=True)
        rows = session.execute(query).all()
        if not rows:
            break
        by_workspace: dict[str, list[int]] = {}
        for event_id, workspace_id in rows:
            by_workspace.setdefault(workspace_id, []).append(event_id)
        for workspace_id, event_ids in by_workspace.items():
            batch = Batch(
                workspace_id=workspace_id,
                status=BATCH_QUEUED,
                event_count=len(event_ids),
                created_at=now,
                due_at=now + timedelta(seconds=lease_seconds),
                published_at=now,
                publish_count=1,
                attempts=0,
            )
            session.add(batch)
            session.flush()
            session.execute(
                update(Event)
                .where(in_list(session, Event.id, event_ids))
                .values(batch_id=batch.id),
                execution_options={"synchronize_session": False},
            )
            batch_ids.append(batch.id)
        if len(rows) < batch_size:
            break
    return batch_ids


def claim_due(session: Session, *, lease_seconds: float, now: datetime | None = None) -> list[int]:
    """Batches whose lease expired (lost by a broker or a killed worker): send them again.

    The next lease doubles each time (capped at 32x) so a long backlog does not flood the
    queue with copies of batches that are merely waiting their turn.
    """
    now = now or utcnow()
    query = (
        select(Batch)
        .where(Batch.status == BATCH_QUEUED, Batch.due_at <= now)
        .order_by(Batch.id)
        .limit(200)
    )
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    ids: list[int] = []
    for batch in session.scalars(query):
        factor = min(2 ** max(batch.publish_count, 0), 32)
        batch.due_at = now + timedelta(seconds=lease_seconds * factor)
        batch.publish_count += 1
        batch.published_at = now
        ids.append(batch.id)
    return ids


def quarantine_exhausted(session: Session, *, now: datetime | None = None) -> int:
    """Batches that failed :data:`MAX_BATCH_ATTEMPTS` times: their events become ``failed``.

    They stay visible (``GET /v1/events?status=failed``) and can be replayed after a fix.
    """
    now = now or utcnow()
    batches = list(
        session.scalars(
            select(Batch).where(Batch.status == BATCH_QUEUED, Batch.attempts >= MAX_BATCH_ATTEMPTS)
        )
    )
    for batch in batches:
        session.execute(
            update(Event)
            .where(Event.batch_id == batch.id, Event.status == EVENT_PENDING)
            .values(status=EVENT_FAILED, error=batch.last_error or "batch kept failing"),
            execution_options={"synchronize_session": False},
        )
        batch.status = BATCH_DONE
        batch.done_at = now
    return len(batches)


def relay(
    db: Database,
    publish: Publish,
    *,
    batch_size: int,
    lease_seconds: float,
    sweep: bool = True,
) -> RelayStats:
    """One relay pass: batch new events, publish them, and (``sweep``) resend due batches."""
    created: list[int] = []
    due: list[int] = []
    quarantined = 0
    while True:
        with db.write() as session:
            fresh = claim_unbatched(session, batch_size=batch_size, lease_seconds=lease_seconds)
        created.extend(fresh)
        if not _publish_all(fresh, publish) or len(fresh) < _MAX_BATCHES_PER_TRANSACTION:
            break
    if sweep:
        with db.write() as session:
            quarantined = quarantine_exhausted(session)
            due = claim_due(session, lease_seconds=lease_seconds)
        _publish_all(due, publish)
        if due:
            log.warning("batches_republished", count=len(due), first=due[0])
    return RelayStats(len(created), len(due), len(created) + len(due), quarantined)


def _publish_all(batch_ids: list[int], publish: Publish) -> bool:
    """Publish each batch; on the first failure stop (they stay due; the sweep retries)."""
    for batch_id in batch_ids:
        try:
            publish(batch_id)
        except Exception as exc:  # broker down
            log.error("batch_publish_failed", batch_id=batch_id, error=str(exc))
            return False
    return True
