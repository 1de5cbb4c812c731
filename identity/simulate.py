"""Dry run of an identity configuration: replay the event log under it, write nothing.

``ecrm identity simulate --config NEW.yaml`` answers "which profiles would merge or split
under this configuration?" before anyone switches it on. The answer is what a replay of
the whole log under the new configuration gives (what a rebuild would produce), compared
with today's profiles or, with ``baseline="replay"``, with a replay under the current
configuration (like with like, when today's state holds history from older
configurations or batches of other sizes).

Why a scratch database and the real resolver: the log is replayed, in id order and in
batches, by :func:`identity.resolve.plan_events` and :func:`~identity.resolve.write_plan`,
the code the workers run, into a temporary SQLite file with the hub's schema. A dry run
that reimplemented the rules would drift from them; this one cannot.

Why one read-only snapshot: the hub's database is read in one transaction (PostgreSQL:
``REPEATABLE READ``, ``READ ONLY``; SQLite: a read transaction with ``query_only``), so
the log replayed and the profiles compared are the same moment, and nothing here can
write to it, whatever a bug tried.

What is carried over, because people decided it: identifiers an operator marked
``allowed`` (never flagged as shared), identifiers flagged ``shared`` that the recorded
conflicts do not explain under the current configuration (so an operator flagged them:
they identify nobody from their first event), unmerge rules (``identity_splits``) and
erasure tombstones (the events they suppress stay suppressed when suppression is on).
Shared flags the conflicts do explain were detection's work: the replay detects them
again under the new ``shared_after``. Links people made (accepted reviews,
``POST /v1/identity/links``) are events, so the replay has them anyway.

How the two partitions are compared, and the examples chosen: :mod:`identity.simulate_report`.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any

import structlog
from sqlalchemy import Table, bindparam, func, select, update
from sqlalchemy import event as sa_event
from sqlalchemy.orm import Session

from identity.config import IdentityConfig
from identity.graph import Key, key_text
from identity.models import CONFLICTS, IDENTIFIERS, PROFILE_EVENTS, PROFILES
from identity.resolve import ALLOWED, SHARED, SHARING_REASONS, link_keys, plan_events, write_plan
from identity.simulate_report import (
    BASE,
    CURRENT,
    PINNED_OWNER,
    SCRATCH_TABLES,
    SKIP,
    Cluster,
    MergeExample,
    Side,
    SimulationReport,
    SplitExample,
    compare,
)
from pipeline import Base, Database, HubError, StoredEvent, utcnow
from pipeline.db import in_list
from pipeline.models import BATCH_DONE, BATCHES, EVENTS, FAILURES, Workspace
from pipeline.schema import is_current, upgrade

log = structlog.get_logger(__name__)
_CHUNK = 400
_COPY = 20_000
#: what people decided that resolution reads, copied as it is: unmerge rules, and the
#: tombstones erasures leave (events carrying them are suppressed when so configured)
DECISION_TABLES = ("identity_splits", "identity_split_members", "erasures", "erasure_tombstones")
#: the events table's columns in :class:`StoredEvent`'s order
_EVENT_COLUMNS = tuple(EVENTS.c[f.name] for f in fields(StoredEvent))


class SimulationError(HubError):
    """The dry run cannot start (unknown workspace, database not migrated)."""


@dataclass(frozen=True)
class _Seeds:
    allowed: frozenset[Key]
    pinned: frozenset[Key]
    detected: int
    #: rows of the tables in :data:`DECISION_TABLES`, by table
    rows: dict[str, list[dict[str, Any]]]


@dataclass
class _Target:
    """One replay: its configuration, scratch database and failures."""

    config: IdentityConfig
    db: Database
    failures: list[str] = field(default_factory=list)


def simulate(
    db: Database,
    workspace_id: str,
    new_config: IdentityConfig,
    *,
    current_config: IdentityConfig,
    baseline: str = "current",
    batch_size: int = 500,
    examples: int = 5,
    progress: Callable[[int, int], None] | None = None,
) -> SimulationReport:
    """Replay ``workspace_id``'s log under ``new_config`` and compare (writes nothing to ``db``).

    ``baseline``: ``current`` compares with the profiles in ``db``, ``replay`` with a replay
    under ``current_config`` (same batches, same operator decisions).
    """
    if baseline not in ("current", "replay"):
        raise SimulationError(f"baseline: {baseline!r} is not current or replay")
    if not is_current(db):
        raise SimulationError("the database is not at the newest schema: run `ecrm init` first")
    with _snapshot(db) as real, ExitStack() as stack:
        if real.get(Workspace, workspace_id) is None:
            raise SimulationError(f"no workspace {workspace_id!r}")
        ev = EVENTS.c
        high = real.scalar(select(func.max(ev.id)).where(ev.workspace_id == workspace_id)) or 0
        total = real.scalar(
            select(func.count()).where(ev.workspace_id == workspace_id, ev.id <= high)
        )
        seeds = _operator_decisions(real, workspace_id, current_config)
        targets = [_Target(new_config, stack.enter_context(_scratch(workspace_id, seeds)))]
        if baseline == "replay":
            targets.append(
                _Target(current_config, stack.enter_context(_scratch(workspace_id, seeds)))
            )
        started = time.perf_counter()
        skipped: list[int] = []
        done = 0
        for events, pending in _log(real, workspace_id, high, batch_size):
            skipped += pending
            for target in targets:
                _apply(target, workspace_id, events, seeds.allowed)
            done += len(events)
            if progress is not None:
                progress(done, int(total or 0))
        seconds = time.perf_counter() - started
        new = targets[0].db
        _fill(new, CURRENT, _partition(real, workspace_id, high))
        base_session = real
        if baseline == "replay":
            base_session = stack.enter_context(targets[1].db.read())
            _fill(new, BASE, _partition(base_session, workspace_id, high))
        else:
            _fill(new, SKIP, ((event_id,) for event_id in skipped))
        return compare(
            real,
            Side(base_session, workspace_id),
            new,
            workspace_id,
            new_config,
            seeded={
                "allowed": len(seeds.allowed),
                "shared": len(seeds.pinned),
                "shared_detected": seeds.detected,
                "splits": len(seeds.rows.get("identity_splits", ())),
                "tombstones": len(seeds.rows.get("erasure_tombstones", ())),
            },
            failures=[target.failures for target in targets],
            examples=examples,
            seconds=seconds,
            events=done,
            batch_size=batch_size,
            baseline=baseline,
        )


@contextmanager
def _snapshot(db: Database) -> Iterator[Session]:
    """One read-only transaction on the hub's database (see the module docstring)."""
    with db.read() as session:
        if db.dialect == "postgresql":
            options = {"isolation_level": "REPEATABLE READ", "postgresql_readonly": True}
            session.connection(execution_options=options)
            yield session
            return
        connection = session.connection()
        connection.exec_driver_sql("PRAGMA query_only = ON")
        try:
            yield session
        finally:
            connection.exec_driver_sql("PRAGMA query_only = OFF")


def _no_foreign_keys(dbapi_connection: Any, _record: Any) -> None:
    # the scratch database holds no events: its profile_events point at the hub's
    dbapi_connection.execute("PRAGMA foreign_keys = OFF")


@contextmanager
def _scratch(workspace_id: str, seeds: _Seeds) -> Iterator[Database]:
    """A temporary SQLite database with the hub's schema and the operator decisions."""
    with tempfile.TemporaryDirectory(prefix="ecrm-simulate-") as folder:
        db = Database.connect(f"sqlite:///{folder}/replay.sqlite", sqlite_synchronous="OFF")
        sa_event.listen(db.engine, "connect", _no_foreign_keys)
        try:
            upgrade(db)
            with db.write() as session:
                _seed(session, workspace_id, seeds)
            yield db
        finally:
            db.dispose()


def _operator_decisions(real: Session, workspace_id: str, config: IdentityConfig) -> _Seeds:
    """What people decided that resolution reads from the database (module docstring)."""
    ids = IDENTIFIERS.c
    rows = real.execute(
        select(ids.kind, ids.value, ids.profile_id, ids.sharing).where(
            ids.workspace_id == workspace_id, ids.sharing.is_not(None)
        )
    ).all()
    allowed = frozenset((kind, value) for kind, value, _, sharing in rows if sharing == ALLOWED)
    people = {key_text((k, v)): {pid} for k, v, pid, sharing in rows if sharing == SHARED}
    texts = sorted(people)
    for start in range(0, len(texts), _CHUNK):
        found = real.execute(
            select(CONFLICTS.c.identifier, CONFLICTS.c.profile_ids).where(
                CONFLICTS.c.workspace_id == workspace_id,
                CONFLICTS.c.reason.in_(SHARING_REASONS),
                in_list(real, CONFLICTS.c.identifier, texts[start : start + _CHUNK]),
            )
        )
        for text, profile_ids in found:
            people[text].update(profile_ids)
    pinned = [text for text, seen in people.items() if len(seen) <= config.shared_after]
    return _Seeds(
        allowed=allowed,
        pinned=frozenset(_key(text) for text in pinned),
        detected=len(people) - len(pinned),
        rows={
            table.name: [
                dict(row)
                for row in real.execute(
                    select(table).where(table.c.workspace_id == workspace_id)
                ).mappings()
            ]
            for table in _decision_tables()
        },
    )


def _decision_tables() -> list[Table]:
    """The tables of :data:`DECISION_TABLES` this hub has (their models are loaded)."""
    return [Base.metadata.tables[name] for name in DECISION_TABLES if name in Base.metadata.tables]


def _key(text: str) -> Key:
    kind, _, value = text.partition(":")
    return kind, value


def _seed(session: Session, workspace_id: str, seeds: _Seeds) -> None:
    if session.get(Workspace, workspace_id) is None:
        session.add(Workspace(id=workspace_id, name=workspace_id, created_at=utcnow()))
        session.flush()
    SCRATCH_TABLES.create_all(session.connection())
    if seeds.pinned:
        epoch, now = datetime(1970, 1, 1, tzinfo=UTC), utcnow()
        session.execute(
            PROFILES.insert(),
            {
                "id": PINNED_OWNER,
                "workspace_id": workspace_id,
                "traits": {},
                "trait_times": {},
                "first_seen_at": epoch,
                "last_seen_at": epoch,
                "event_count": 0,
                "created_at": now,
                "updated_at": now,
                "merged_into": None,
            },
        )
        session.execute(
            IDENTIFIERS.insert(),
            [
                {
                    "workspace_id": workspace_id,
                    "kind": kind,
                    "value": value,
                    "profile_id": PINNED_OWNER,
                    "channel": "operator",
                    "first_seen_at": epoch,
                    "last_seen_at": epoch,
                    "attached_to": PINNED_OWNER,
                    "sharing": SHARED,
                }
                for kind, value in sorted(seeds.pinned)
            ],
        )
    for table in _decision_tables():
        if seeds.rows[table.name]:
            session.execute(table.insert(), seeds.rows[table.name])


def _log(
    real: Session, workspace_id: str, high: int, size: int
) -> Iterator[tuple[list[StoredEvent], list[int]]]:
    """The log in id order, ``size`` events at a time, with those the hub has not processed."""
    ev = EVENTS.c
    query = (
        select(*_EVENT_COLUMNS, BATCHES.c.status, FAILURES.c.event_id)
        .select_from(
            EVENTS.join(BATCHES, BATCHES.c.id == ev.batch_id).outerjoin(
                FAILURES, FAILURES.c.event_id == ev.id
            )
        )
        .order_by(ev.id)
        .limit(size)
    )
    last = 0
    while True:
        rows = real.execute(
            query.where(ev.workspace_id == workspace_id, ev.id > last, ev.id <= high)
        ).all()
        if not rows:
            return
        events = [StoredEvent(*row[:-2]) for row in rows]
        yield events, [row[0] for row in rows if row[-2] != BATCH_DONE or row[-1] is not None]
        last = events[-1].id


def _apply(
    target: _Target, workspace_id: str, events: Sequence[StoredEvent], allowed: frozenset[Key]
) -> None:
    """Resolve one batch as a worker does: all at once, else event by event (savepoints)."""
    try:
        with target.db.write() as session:
            write_plan(session, plan_events(session, workspace_id, events, config=target.config))
            _allow(session, workspace_id, events, allowed)
        return
    except Exception as exc:  # a bad event: find it as the worker does, one at a time
        log.debug("simulation_batch_isolating", first=events[0].id, error=repr(exc))
    with target.db.write() as session:
        for one in events:
            try:
                with session.begin_nested():
                    plan = plan_events(session, workspace_id, [one], config=target.config)
                    write_plan(session, plan)
            except Exception as exc:
                target.failures.append(f"event {one.message_id}: {type(exc).__name__}: {exc}")
        _allow(session, workspace_id, events, allowed)


def _allow(
    session: Session, workspace_id: str, events: Sequence[StoredEvent], allowed: frozenset[Key]
) -> None:
    """Mark identifiers an operator allowed as soon as they exist (before they are counted:
    detection only flags identifiers known before a batch)."""
    if not allowed:
        return
    keys = {key for e in events for key in [*e.identifiers.items(), *link_keys(e)]} & allowed
    if keys:
        ids = IDENTIFIERS.c
        session.execute(
            update(IDENTIFIERS)
            .where(
                ids.workspace_id == workspace_id,
                ids.kind == bindparam("k"),
                ids.value == bindparam("v"),
                ids.sharing.is_(None),
            )
            .values(sharing=ALLOWED),
            [{"k": kind, "v": value} for kind, value in sorted(keys)],
        )


def _partition(session: Session, workspace_id: str, high: int) -> Iterator[tuple[int, str]]:
    """(event id, the live profile it is counted in), in event order."""
    final = Side(session, workspace_id).final
    pe = PROFILE_EVENTS.c
    last = 0
    while True:
        rows = session.execute(
            select(pe.event_id, pe.profile_id)
            .where(pe.workspace_id == workspace_id, pe.event_id > last, pe.event_id <= high)
            .order_by(pe.event_id)
            .limit(_COPY)
        ).all()
        if not rows:
            return
        for event_id, profile_id in rows:
            yield event_id, final(profile_id)
        last = rows[-1][0]


def _fill(db: Database, table: Table, rows: Iterable[tuple[Any, ...]]) -> None:
    names = [column.name for column in table.columns]
    with db.write() as session:
        batch: list[dict[str, Any]] = []
        for row in rows:
            batch.append(dict(zip(names, row, strict=True)))
            if len(batch) == _COPY:
                session.execute(table.insert(), batch)
                batch = []
        if batch:
            session.execute(table.insert(), batch)


__all__ = [
    "Cluster",
    "MergeExample",
    "SimulationError",
    "SimulationReport",
    "SplitExample",
    "simulate",
]
