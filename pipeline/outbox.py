"""The outbox relay: publish due batches, grouped into broker messages, after commit.

Why this shape: ingest appends events and their :class:`Batch` row in one transaction, so
accepting an event never waits for the broker. The relay claims due batches (fresh ones at
once, published ones whose lease expired), pushes their due time forward, commits, then
publishes their ids, several batches per message up to ``batch_size`` events (one broker
message carries many events: the broker is not the limit). A crash between commit and
publish leaves the batches due again after their lease, and processing is idempotent, so a
batch published twice is processed once. The database, not the broker, is the truth:
whatever the broker loses, the sweep finds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog
from sqlalchemy import exists, insert, literal, select, update
from sqlalchemy.orm import Session

from pipeline.db import Database, UTCDateTime
from pipeline.envelope import utcnow
from pipeline.models import (
    BATCH_DONE,
    BATCH_QUEUED,
    FAILURES,
    SPOOLED,
    Batch,
    Event,
    EventFailure,
)

log = structlog.get_logger(__name__)

#: puts one message carrying these batch ids on the broker
Publish = Callable[[list[int]], None]
#: after this many failed processing attempts a batch's events are quarantined as failed
MAX_BATCH_ATTEMPTS = 8
_MAX_CLAIM = 1000


@dataclass(frozen=True)
class RelayStats:
    """What one relay pass did."""

    published: int = 0
    republished: int = 0
    messages: int = 0
    quarantined: int = 0


@dataclass(frozen=True)
class Claimed:
    """Batches claimed for publishing, already grouped into broker messages."""

    messages: list[list[int]]
    republished: int

    @property
    def batches(self) -> int:
        return sum(len(message) for message in self.messages)


def claim_due(
    session: Session, *, batch_size: int, lease_seconds: float, now: datetime | None = None
) -> Claimed:
    """Claim due batches and group them into messages of at most ``batch_size`` events.

    Each claim pushes the batch's due time a lease forward; the lease doubles with every
    publish (capped at 32x) so a long backlog does not flood the queue with copies of
    batches that are merely waiting their turn.
    """
    now = now or utcnow()
    query = (
        select(Batch.id, Batch.workspace_id, Batch.event_count, Batch.publish_count)
        .where(Batch.status == BATCH_QUEUED, Batch.due_at <= now)
        .order_by(Batch.id)
        .limit(_MAX_CLAIM)
    )
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    rows = session.execute(query).all()
    messages: list[list[int]] = []
    open_message: dict[str, tuple[list[int], int]] = {}
    updates: dict[int, list[int]] = {}
    republished = 0
    for batch_id, workspace_id, event_count, publish_count in rows:
        ids, size = open_message.get(workspace_id, ([], 0))
        if ids and size + event_count > batch_size:
            messages.append(ids)
            ids, size = [], 0
        ids.append(batch_id)
        open_message[workspace_id] = (ids, size + event_count)
        updates.setdefault(publish_count, []).append(batch_id)
        republished += publish_count > 0
    messages.extend(ids for ids, _ in open_message.values() if ids)
    for publish_count, ids in updates.items():
        factor = min(2**publish_count, 32)
        session.execute(
            update(Batch)
            .where(Batch.id.in_(ids))
            .values(
                due_at=now + timedelta(seconds=lease_seconds * factor),
                publish_count=publish_count + 1,
                published_at=now,
            ),
            execution_options={"synchronize_session": False},
        )
    return Claimed(messages, republished)


def quarantine_exhausted(session: Session, *, now: datetime | None = None) -> int:
    """Batches that failed :data:`MAX_BATCH_ATTEMPTS` times: their events become ``failed``.

    They stay visible (``GET /v1/events?status=failed``) and can be replayed after a fix.
    A batch whose spooled requests were never expanded has no events to quarantine: it
    stays queued and retried (ever less often), its requests kept and counted as backlog.
    """
    now = now or utcnow()
    batches = list(
        session.scalars(
            select(Batch).where(
                Batch.status == BATCH_QUEUED,
                Batch.attempts >= MAX_BATCH_ATTEMPTS,
                ~exists().where(SPOOLED.c.batch_id == Batch.id),
            )
        )
    )
    for batch in batches:
        error = batch.last_error or "batch kept failing"
        session.execute(
            insert(FAILURES).from_select(
                ["event_id", "workspace_id", "error", "attempts", "failed_at"],
                select(
                    Event.id,
                    Event.workspace_id,
                    literal(error),
                    literal(batch.attempts),
                    literal(now, UTCDateTime()),
                ).where(
                    Event.batch_id == batch.id,
                    ~exists().where(EventFailure.event_id == Event.id),
                ),
            )
        )
        session.execute(
            update(EventFailure)
            .where(EventFailure.retry_batch_id == batch.id)
            .values(
                retry_batch_id=None,
                error=error,
                attempts=EventFailure.attempts + 1,
                failed_at=now,
            ),
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
    """One relay pass: publish due batches (and, ``sweep``, quarantine exhausted ones)."""
    published = republished = messages = quarantined = 0
    if sweep:
        with db.write() as session:
            quarantined = quarantine_exhausted(session)
    while True:
        with db.write() as session:
            claimed = claim_due(session, batch_size=batch_size, lease_seconds=lease_seconds)
        sent = _publish_all(claimed.messages, publish)
        published += claimed.batches
        republished += claimed.republished
        messages += sent
        if sent < len(claimed.messages) or claimed.batches < _MAX_CLAIM:
            break
    if republished:
        log.warning("batches_republished", count=republished)
    return RelayStats(published, republished, messages, quarantined)


def _publish_all(messages: list[list[int]], publish: Publish) -> int:
    """Publish each message; on the first failure stop (they stay due; the sweep retries)."""
    for sent, batch_ids in enumerate(messages):
        try:
            publish(batch_ids)
        except Exception as exc:  # broker down
            log.error("batch_publish_failed", batch_ids=batch_ids, error=str(exc))
            return sent
    return len(messages)
