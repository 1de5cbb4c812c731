"""Wiring for batch processing: the event log's bookkeeping around identity resolution.

Why the fallback: a message's batches normally commit as one transaction (fast, all or
nothing). If that fails for a reason that retrying will not cure, they are re-run one event
at a time, each in a savepoint, so the one bad event is quarantined as ``failed`` with its
error and its neighbours go on.

Each path fires the marketing rules (:func:`personalization.rules.fire.fire_rules`) after
identity and consent, in the same transaction: the batch and its firings, queued actions
and points commit together, and a crash leaves none of them half done.
"""

from __future__ import annotations

import random
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

import structlog
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session

import identity
from connectors.web.batch import SEGMENT_BATCH, spooled_batch_mapper
from identity.config import IdentityConfig
from identity.resolve import Plan as IdentityPlan
from personalization import consent
from personalization.loyalty import DEFAULT_CONFIG, LoyaltyConfig
from personalization.rules.fire import fire_rules
from pipeline import ConflictError, Database, TransientError
from pipeline.caps import Cap
from pipeline.outbox import Publish, RelayStats, relay
from pipeline.processing import (
    StoredEvent,
    complete_batches,
    load_batches,
    record_batch_error,
)
from pipeline.spool import expand, spooled
from workers.runtime import Runtime

log = structlog.get_logger(__name__)

#: in-process attempts after a conflict with a concurrent worker, and the first pause
CONFLICT_RETRIES = 8
CONFLICT_PAUSE_SECONDS = 0.01


def is_transient(exc: BaseException) -> bool:
    """Database busy, connection lost, deadlock or a concurrent claim: worth retrying."""
    if isinstance(exc, TransientError | OperationalError):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


def is_conflict(exc: BaseException) -> bool:
    """Another transaction changed what this one read: worth planning again at once."""
    if isinstance(exc, ConflictError):
        return True
    code = getattr(getattr(exc, "orig", None), "sqlstate", None)
    return code in ("40001", "40P01")  # serialization failure, deadlock detected


def process_batches(
    db: Database,
    batch_ids: Sequence[int],
    config: IdentityConfig | None = None,
    *,
    loyalty_config: LoyaltyConfig = DEFAULT_CONFIG,
    default_region: str = "US",
    channel_caps: Mapping[str, Cap] | None = None,
) -> int:
    """Process batches exactly once in their effects; returns how many events it processed.

    A conflict with a concurrent worker (both merging the same profiles, say) is retried
    here a few times after a short random pause: the other transaction has committed by
    then, and a trip through the broker's retry backoff would cost seconds.
    """
    options = _Options(config, loyalty_config, default_region, dict(channel_caps or {}))
    _expand_spooled(db, batch_ids, default_region)
    if db.dialect == "sqlite":
        done = _process_optimistically(db, batch_ids, options)
        if done is not None:
            return done
    for attempt in range(CONFLICT_RETRIES):
        try:
            return _process_locked(db, batch_ids, options)
        except TransientError as exc:
            cause = exc.__cause__ or exc
            if is_conflict(cause) and attempt < CONFLICT_RETRIES - 1:
                log.debug("batch_conflict", batch_ids=list(batch_ids), error=str(exc))
                time.sleep(random.uniform(0, CONFLICT_PAUSE_SECONDS * 2**attempt))
                continue
            _record_error(db, batch_ids, cause)
            raise
    raise AssertionError("unreachable")


def _expand_spooled(db: Database, batch_ids: Sequence[int], default_region: str) -> None:
    """Spool mode: the batches' requests stored raw become their events first.

    In a transaction of its own, so that processing (and quarantining an event that
    fails) then meets ordinary events; a batch without spooled requests costs one read.
    """
    with db.read() as session:
        pending = spooled(session, batch_ids)
    if not pending:
        return
    mappers = {SEGMENT_BATCH: spooled_batch_mapper(default_region)}
    try:
        with db.write() as session:
            done = expand(session, pending, mappers, default_region)
    except Exception as exc:
        _record_error(db, batch_ids, exc)
        if is_transient(exc):
            raise TransientError(str(exc)) from exc
        raise
    log.debug("spool_expanded", batch_ids=pending, events=done.events, rejected=done.rejected)


@dataclass(frozen=True)
class _Options:
    identity: IdentityConfig | None
    loyalty: LoyaltyConfig
    region: str
    channel_caps: Mapping[str, Cap]

    def fire(
        self,
        session: Session,
        workspace_id: str,
        events: Sequence[StoredEvent],
        plan: IdentityPlan,
        replayed: Collection[int],
    ) -> None:
        """Fire the rules; the identity plan just written says which profile has each event.

        Only replayed events can have firings already: a batch's firings commit with it,
        and only a queued (never committed) batch is processed.
        """
        fire_rules(
            session,
            workspace_id,
            events,
            profiles={row["event_id"]: row["profile_id"] for row in plan.profile_events},
            loyalty_config=self.loyalty,
            default_region=self.region,
            channel_caps=self.channel_caps,
            fired_before=replayed,
        )


def _process_locked(db: Database, batch_ids: Sequence[int], options: _Options) -> int:
    config = options.identity
    try:
        with db.write() as session:
            works = load_batches(session, batch_ids, lock=True)
            for work in works:
                plan = identity.apply_events(session, work.workspace_id, work.events, config=config)
                consent.apply_events(session, work.workspace_id, work.events)
                options.fire(session, work.workspace_id, work.events, plan, work.replayed)
            complete_batches(session, works)
    except Exception as exc:
        if is_transient(exc):  # recorded on the batch by the caller, unless retried at once
            raise TransientError(str(exc)) from exc
        log.error("batch_failed_isolating", batch_ids=list(batch_ids), error=repr(exc))
        return _isolating(db, batch_ids, options)
    events = sum(len(work.events) for work in works)
    log.debug("batches_processed", batch_ids=list(batch_ids), events=events)
    return events


def _record_error(db: Database, batch_ids: Sequence[int], exc: BaseException) -> None:
    try:
        with db.write() as session:
            record_batch_error(session, batch_ids, f"{type(exc).__name__}: {exc}")
    except Exception as record_exc:  # database down: the retry is what matters
        log.warning("batch_error_not_recorded", batch_ids=list(batch_ids), error=str(record_exc))


def _process_optimistically(
    db: Database, batch_ids: Sequence[int], options: _Options
) -> int | None:
    """SQLite: read and plan outside the write lock, then write only if nothing changed.

    SQLite has one write lock for the whole database, shared with the API's ingest. Holding
    it only for the writes (not for the reads and the planning) lets ingest go on while a
    batch is planned. ``None`` means "do it the locked way" (a conflict, or any error).
    """
    try:
        with db.read() as session:
            works = load_batches(session, batch_ids, lock=False)
            plans = [
                identity.plan_events(session, w.workspace_id, w.events, config=options.identity)
                for w in works
            ]
        if not works:
            return 0
        with db.write() as session:
            complete_batches(session, works)
            for work, plan in zip(works, plans, strict=True):
                identity.write_plan(session, plan)
                consent.apply_events(session, work.workspace_id, work.events)
                options.fire(session, work.workspace_id, work.events, plan, work.replayed)
    except Exception as exc:
        log.debug("optimistic_batch_retry", batch_ids=list(batch_ids), error=str(exc))
        return None
    return sum(len(work.events) for work in works)


def _isolating(db: Database, batch_ids: Sequence[int], options: _Options) -> int:
    """Process event by event, each in a savepoint: a bad event is quarantined, not its batch.

    Still one transaction, so the batches are done all at once or not at all.
    """
    processed = 0
    failures: dict[int, str] = {}
    try:
        with db.write() as session:
            works = load_batches(session, batch_ids, lock=True)
            for work in works:
                for event in work.events:
                    try:
                        with session.begin_nested():
                            plan = identity.apply_events(
                                session, work.workspace_id, [event], config=options.identity
                            )
                            consent.apply_events(session, work.workspace_id, [event])
                            options.fire(session, work.workspace_id, [event], plan, work.replayed)
                        processed += 1
                    except Exception as exc:
                        if is_transient(exc):
                            raise
                        log.error("event_failed", event_id=event.id, error=repr(exc))
                        failures[event.id] = f"{type(exc).__name__}: {exc}"
            complete_batches(session, works, failures)
    except Exception as exc:
        _record_error(db, batch_ids, exc)
        raise TransientError(str(exc)) from exc
    return processed


def publisher() -> Publish:
    """A function that puts one message of batch ids on the ``ingest`` queue (confirmed)."""
    from workers.tasks import process_batch as task

    def publish(batch_ids: list[int]) -> None:
        task.apply_async(
            args=[batch_ids],
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
