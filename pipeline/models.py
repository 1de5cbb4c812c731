"""Tables the pipeline owns: workspaces, the append-only event log, batches and failures.

Why batches are the outbox: each ingest transaction appends its events together with one
:class:`Batch` row naming them; the relay publishes due batch ids after commit. A crash
between commit and publish leaves the batch due, and the next relay or sweep sends it:
work is delayed, never lost.

Why event rows are never updated: an event's processing state is *derived* (its batch is
done, or an :class:`EventFailure` row quarantines it), so processing writes a few batch rows
instead of rewriting every event row. The log stays append-only, which is what makes it the
source of truth, and it is what keeps the write path fast on both databases.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    Boolean,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
    UniqueConstraint,
    insert,
)
from sqlalchemy.orm import Mapped, Session, mapped_column

from pipeline.db import Base, BigId, JsonDoc, UTCDateTime
from pipeline.envelope import utcnow

EVENT_PENDING = "pending"
EVENT_PROCESSED = "processed"
EVENT_FAILED = "failed"
EVENT_STATUSES = (EVENT_PENDING, EVENT_PROCESSED, EVENT_FAILED)

BATCH_QUEUED = "queued"
BATCH_DONE = "done"


class Workspace(Base):
    """A tenant: every owned row carries its id; the embedded default has ``default``."""

    __tablename__ = "workspaces"

    id: Mapped[str] = mapped_column(String(63), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class WriteKey(Base):
    """A write key kept in the database (see :mod:`pipeline.write_keys`): only its hash."""

    __tablename__ = "write_keys"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    workspace_id: Mapped[str] = mapped_column(String(63), ForeignKey("workspaces.id"))
    #: the source it was made for (``pos-store-12``)
    name: Mapped[str] = mapped_column(String(100))
    #: SHA-256 of the key, hex
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    #: the key's first characters, to tell keys apart in a list
    prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class Event(Base):
    """One accepted touchpoint event. Appended once, never changed."""

    __tablename__ = "events"
    __table_args__ = (
        UniqueConstraint("workspace_id", "message_id", name="uq_events_workspace_message"),
        Index("ix_events_batch", "batch_id"),
        Index("ix_events_received", "workspace_id", "received_at"),
        Index("ix_events_workspace_log", "workspace_id", "id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    workspace_id: Mapped[str] = mapped_column(String(63), ForeignKey("workspaces.id"))
    message_id: Mapped[str] = mapped_column(String(255))
    channel: Mapped[str] = mapped_column(String(16))
    type: Mapped[str] = mapped_column(String(64))
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime())
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())
    source: Mapped[str] = mapped_column(String(64))
    identifiers: Mapped[dict[str, Any]] = mapped_column(JsonDoc)
    traits: Mapped[dict[str, Any]] = mapped_column(JsonDoc)
    properties: Mapped[dict[str, Any]] = mapped_column(JsonDoc)
    context: Mapped[dict[str, Any]] = mapped_column(JsonDoc)
    batch_id: Mapped[int] = mapped_column(BigId)


class Batch(Base):
    """The events of one ingest transaction: the unit of processing (the outbox row).

    ``due_at`` is when the relay should (re)publish it: at once when fresh, then after a
    lease that doubles with each publish, so a batch a broker lost is sent again.
    """

    __tablename__ = "batches"
    __table_args__ = (Index("ix_batches_status_due", "status", "due_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    workspace_id: Mapped[str] = mapped_column(String(63), ForeignKey("workspaces.id"))
    status: Mapped[str] = mapped_column(String(16), default=BATCH_QUEUED)
    event_count: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    due_at: Mapped[datetime] = mapped_column(UTCDateTime())
    published_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    publish_count: Mapped[int] = mapped_column(Integer, default=0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    done_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    #: a replay batch names its events through ``EventFailure.retry_batch_id``
    replay: Mapped[bool] = mapped_column(Boolean, default=False)


class EventFailure(Base):
    """An event quarantined after processing failed for good: kept, listed, replayable.

    ``retry_batch_id`` is set while a replay of it is queued; the failure row is deleted
    when the replay succeeds (the event is then processed).
    """

    __tablename__ = "event_failures"
    __table_args__ = (
        Index("ix_event_failures_workspace", "workspace_id", "event_id"),
        Index("ix_event_failures_retry", "retry_batch_id"),
    )

    event_id: Mapped[int] = mapped_column(BigId, ForeignKey("events.id"), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(String(63), ForeignKey("workspaces.id"))
    error: Mapped[str] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=1)
    failed_at: Mapped[datetime] = mapped_column(UTCDateTime())
    retry_batch_id: Mapped[int | None] = mapped_column(BigId, nullable=True)


class SpooledRequest(Base):
    """A request stored raw in spool mode (``ECRM_INGEST_MODE=spool``), not yet expanded.

    Why a row per request under a batch: the batch is the outbox row the relay already
    publishes, leases and sweeps, so a spooled request reaches a worker, survives a lost
    broker message and is retried exactly like appended events; the worker expands it
    into events of that same batch (:mod:`pipeline.spool`) and deletes it.
    """

    __tablename__ = "spooled_requests"
    __table_args__ = (Index("ix_spooled_requests_batch", "batch_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    workspace_id: Mapped[str] = mapped_column(String(63), ForeignKey("workspaces.id"))
    batch_id: Mapped[int] = mapped_column(BigId)
    #: what the body is, and so which mapper expands it (``segment.batch``)
    kind: Mapped[str] = mapped_column(String(32))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())
    #: the request body as received (decompressed), JSON
    body: Mapped[bytes] = mapped_column(LargeBinary)
    #: positions refused at the door (already answered as rejected): not expanded
    skip: Mapped[Any] = mapped_column(JsonDoc)


class IngestRejection(Base):
    """A spooled message that passed the door's checks but not expansion: kept, listed.

    Why a table: the client was answered before the message was mapped and validated, so
    a refusal found later must be visible somewhere (``GET /v1/ingest/rejections``),
    never dropped silently.
    """

    __tablename__ = "ingest_rejections"
    __table_args__ = (Index("ix_ingest_rejections_workspace", "workspace_id", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    workspace_id: Mapped[str] = mapped_column(String(63), ForeignKey("workspaces.id"))
    batch_id: Mapped[int] = mapped_column(BigId)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())
    #: the message's index in the request's ``batch`` array
    position: Mapped[int] = mapped_column(Integer)
    message_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    field: Mapped[str] = mapped_column(String(100))
    reason: Mapped[str] = mapped_column(Text)
    rejected_at: Mapped[datetime] = mapped_column(UTCDateTime())


def new_batch(session: Session, workspace_id: str, events: int, *, replay: bool = False) -> int:
    """Insert a queued batch row, due at once (the relay publishes it next); its id."""
    now = utcnow()
    batch_id: int = session.execute(
        insert(Batch)
        .values(
            workspace_id=workspace_id,
            status=BATCH_QUEUED,
            event_count=events,
            created_at=now,
            due_at=now,
            publish_count=0,
            attempts=0,
            replay=replay,
        )
        .returning(Batch.id)
    ).scalar_one()
    return batch_id


#: Core tables for bulk statements (typed for mypy).
EVENTS = cast(Table, Event.__table__)
BATCHES = cast(Table, Batch.__table__)
FAILURES = cast(Table, EventFailure.__table__)
SPOOLED = cast(Table, SpooledRequest.__table__)
REJECTIONS = cast(Table, IngestRejection.__table__)
