"""Wiring for batch processing: the event log's bookkeeping around identity resolution.

Why the fallback: a batch normally commits as one transaction (fast, all or nothing). If it
fails for a reason that retrying will not cure, the batch is re-run one event at a time so
the one bad event is quarantined as ``failed`` with its error and its neighbours go on.
"""

from __future__ import annotations

import structlog
from sqlalchemy.exc import DBAPIError, OperationalError

import identity
from pipeline import Database, TransientError
from pipeline.outbox import Publish, RelayStats, relay
from pipeline.processing import complete_batch, load_batch, mark_failed, record_batch_error
from workers.runtime import Runtime

log = structlog.get_logger(__name__)


def is_transient(exc: BaseException) -> bool:
    """Database busy, connection lost, deadlock or a concurrent claim: worth retrying."""
    if isinstance(exc, TransientError | OperationalError):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


def process_batch(db: Database, batch_id: int) -> int:
    """Process a batch exactly once in its effects; returns how many events it processed."""
    if db.dialect == "sqlite":
        done = _process_optimistically(db, batch_id)
        if done is not None:
            return done
    try:
        with db.write() as session:
            work = load_batch(session, batch_id)
            if work is None:
                return 0
            profile_ids = identity.apply_events(session, work.workspace_id, work.events)
            complete_batch(session, batch_id, profile_ids)
        log.debug("batch_processed", batch_id=batch_id, events=len(profile_ids))
        return len(profile_ids)
    except Exception as exc:
        if is_transient(exc):
            try:
                with db.write() as session:
                    record_batch_error(session, batch_id, f"{type(exc).__name__}: {exc}")
            except Exception as record_exc:  # database down: the retry is what matters
                log.warning("batch_error_not_recorded", batch_id=batch_id, error=str(record_exc))
            raise TransientError(str(exc)) from exc
        log.error("batch_failed_isolating", batch_id=batch_id, error=repr(exc))
        return _one_by_one(db, batch_id)


def _process_optimistically(db: Database, batch_id: int) -> int | None:
    """SQLite: read and plan outside the write lock, then write only if nothing changed.

    SQLite has one write lock for the whole database, shared with the API's ingest. Holding
    it only for the writes (not for the reads and the planning) lets ingest go on while a
    batch is planned. ``None`` means "do it the locked way" (a conflict, or any error).
    """
    try:
        with db.read() as session:
            work = load_batch(session, batch_id)
            if work is None:
                return 0
            plan = identity.plan_events(session, work.workspace_id, work.events)
        with db.write() as session:
            identity.write_plan(session, plan)
            complete_batch(session, batch_id, plan.assignments)
    except Exception as exc:
        log.debug("optimistic_batch_retry", batch_id=batch_id, error=str(exc))
        return None
    return len(plan.assignments)


def _one_by_one(db: Database, batch_id: int) -> int:
    with db.read() as session:
        work = load_batch(session, batch_id)
    if work is None:
        return 0
    processed = 0
    for event in work.events:
        try:
            with db.write() as session:
                profile_ids = identity.apply_events(session, work.workspace_id, [event])
                complete_batch(session, batch_id, profile_ids, done=False)
            processed += 1
        except Exception as exc:
            if is_transient(exc):
                raise TransientError(str(exc)) from exc
            log.error("event_failed", event_id=event.id, error=repr(exc))
            with db.write() as session:
                mark_failed(session, {event.id: f"{type(exc).__name__}: {exc}"})
    with db.write() as session:
        complete_batch(session, batch_id, {})
    return processed


def publisher() -> Publish:
    """A function that puts one batch id on the ``ingest`` queue (confirmed publish)."""
    from workers.tasks import process_batch as task

    def publish(batch_id: int) -> None:
        task.apply_async(
            args=[batch_id],
            retry=True,
            retry_policy={"max_retries": 3, "interval_start": 0.2, "interval_step": 0.5},
        )

    return publish


def relay_outbox(runtime: Runtime, *, sweep: bool = True) -> RelayStats:
    """One relay pass with this process's publisher."""
    settings = runtime.settings
    return relay(
        runtime.db,
        publisher(),
        batch_size=settings.batch_size,
        lease_seconds=settings.batch_lease_seconds,
        sweep=sweep,
    )
