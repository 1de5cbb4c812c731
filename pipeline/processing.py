"""The event log's side of processing batches: load them, then record the outcome.

Why the pipeline owns only this part: what processing *means* (identity, rules) lives in
other packages; here we guarantee the bookkeeping that makes processing exactly-once in
its effects. Only ``queued`` batches are handed out, and a batch becomes ``done`` in the
same transaction as its effects, guarded by its status: a second worker handed the same
batch (a republished copy) finds it done, or fails its guard and rolls back. Event rows are
never touched; an event that fails for good gets an :class:`EventFailure` row instead.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, delete, select, update
from sqlalchemy.orm import Session

from pipeline.envelope import utcnow
from pipeline.errors import TransientError
from pipeline.models import (
    BATCH_DONE,
    BATCH_QUEUED,
    BATCHES,
    EVENTS,
    FAILURES,
    Batch,
    EventFailure,
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
    #: the connector or integration that sent it (trait source priority)
    source: str = ""


@dataclass
class BatchWork:
    """The queued batches of one workspace among those a message named, and their events.

    ``replayed`` holds the ids of events that come from a replay (they already have a
    failure row, which success removes and another failure updates).
    """

    workspace_id: str
    batch_ids: list[int] = field(default_factory=list)
    events: list[StoredEvent] = field(default_factory=list)
    replayed: set[int] = field(default_factory=set)


#: Core columns (not ORM attributes): rows come back as plain tuples, without the ORM's
#: per-row loading machinery, which cost a tenth of the worker's time.
_EVENT_COLUMNS = (
    EVENTS.c.id,
    EVENTS.c.workspace_id,
    EVENTS.c.message_id,
    EVENTS.c.channel,
    EVENTS.c.type,
    EVENTS.c.occurred_at,
    EVENTS.c.identifiers,
    EVENTS.c.traits,
    EVENTS.c.properties,
    EVENTS.c.source,
)


def load_events(session: Session, event_ids: Sequence[int]) -> list[StoredEvent]:
    """These events, in log order (an unmerge or a simulation replays them)."""
    events: list[StoredEvent] = []
    chosen = sorted(set(event_ids))
    for start in range(0, len(chosen), 500):
        query = select(*_EVENT_COLUMNS).where(EVENTS.c.id.in_(chosen[start : start + 500]))
        events.extend(StoredEvent(*list(row)) for row in session.execute(query))
    events.sort(key=lambda event: event.id)
    return events


def load_batches(session: Session, batch_ids: Sequence[int], *, lock: bool) -> list[BatchWork]:
    """The still-queued batches among ``batch_ids`` with their events, one work per workspace.

    With ``lock`` on PostgreSQL the batch rows are locked ``FOR UPDATE`` (in id order, so
    two workers never deadlock) and a second worker handed the same batch waits, then finds
    it done. SQLite's ``BEGIN IMMEDIATE`` serializes writers already.
    """
    query = (
        select(BATCHES.c.id, BATCHES.c.workspace_id)
        .where(BATCHES.c.id.in_(sorted(set(batch_ids))), BATCHES.c.status == BATCH_QUEUED)
        .order_by(BATCHES.c.id)
    )
    if lock and session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update()
    works: dict[str, BatchWork] = {}
    owner: dict[int, BatchWork] = {}
    for batch_id, workspace_id in session.execute(query):
        work = works.setdefault(workspace_id, BatchWork(workspace_id))
        work.batch_ids.append(batch_id)
        owner[batch_id] = work
    if not owner:
        return []
    ids = sorted(owner)
    appended = select(*_EVENT_COLUMNS, EVENTS.c.batch_id).where(EVENTS.c.batch_id.in_(ids))
    replays = (
        select(*_EVENT_COLUMNS, FAILURES.c.retry_batch_id)
        .join(FAILURES, FAILURES.c.event_id == EVENTS.c.id)
        .where(FAILURES.c.retry_batch_id.in_(ids))
    )
    for query_, replayed in ((appended, False), (replays, True)):
        for *columns, batch_id in session.execute(query_):
            work = owner[batch_id]
            event = StoredEvent(*columns)
            work.events.append(event)
            if replayed:
                work.replayed.add(event.id)
    for work in works.values():
        work.events.sort(key=lambda event: event.id)
    return list(works.values())


def complete_batches(
    session: Session,
    works: Sequence[BatchWork],
    failures: Mapping[int, str] | None = None,
    *,
    now: datetime | None = None,
) -> None:
    """Mark the batches done and settle their replayed and failed events.

    Raises :class:`TransientError` if any batch is no longer queued: someone else processed
    it meanwhile, and the caller's transaction must not count its events again.
    """
    now = now or utcnow()
    failures = failures or {}
    batch_ids = [batch_id for work in works for batch_id in work.batch_ids]
    if not batch_ids:
        return
    result = session.execute(
        update(Batch)
        .where(Batch.id.in_(batch_ids), Batch.status == BATCH_QUEUED)
        .values(status=BATCH_DONE, done_at=now),
        execution_options={"synchronize_session": False},
    )
    if result.rowcount != len(batch_ids):  # type: ignore[attr-defined]
        raise TransientError("a batch was processed concurrently")
    replayed = {event_id for work in works for event_id in work.replayed}
    succeeded = sorted(replayed - set(failures))
    if succeeded:
        session.execute(delete(EventFailure).where(EventFailure.event_id.in_(succeeded)))
    for work in works:
        own = {event.id: failures[event.id] for event in work.events if event.id in failures}
        if own:
            mark_failed(session, work.workspace_id, own, replayed=work.replayed, now=now)


def mark_failed(
    session: Session,
    workspace_id: str,
    failures: Mapping[int, str],
    *,
    replayed: set[int] | None = None,
    now: datetime | None = None,
) -> None:
    """Quarantine events with their error (kept, listed, replayable)."""
    now = now or utcnow()
    replayed = replayed or set()
    again = [
        {"eid": event_id, "error": error[:2000]}
        for event_id, error in failures.items()
        if event_id in replayed
    ]
    if again:
        session.execute(
            update(FAILURES)
            .where(FAILURES.c.event_id == bindparam("eid"))
            .values(
                error=bindparam("error"),
                attempts=FAILURES.c.attempts + 1,
                failed_at=now,
                retry_batch_id=None,
            ),
            again,
        )
    fresh = [
        {
            "event_id": event_id,
            "workspace_id": workspace_id,
            "error": error[:2000],
            "attempts": 1,
            "failed_at": now,
        }
        for event_id, error in failures.items()
        if event_id not in replayed
    ]
    if fresh:
        session.execute(FAILURES.insert(), fresh)


def record_batch_error(session: Session, batch_ids: Sequence[int], error: str) -> None:
    """Count a failed attempt on batches (they stay queued; the sweep retries them later)."""
    session.execute(
        update(Batch)
        .where(Batch.id.in_(list(batch_ids)), Batch.status == BATCH_QUEUED)
        .values(attempts=Batch.attempts + 1, last_error=error[:2000]),
        execution_options={"synchronize_session": False},
    )
