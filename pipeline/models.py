"""Tables the pipeline owns: workspaces, the append-only event log and its batches (outbox).

Why batches are the outbox: an event is appended with ``batch_id`` NULL in the ingest
transaction; the relay later groups unbatched events into a :class:`Batch` row and
publishes its id. A crash between commit and publish leaves the event unbatched (or the
batch due), and the next relay or sweep picks it up: work is delayed, never lost.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from sqlalchemy import ForeignKey, Index, Integer, String, Table, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from pipeline.db import Base, BigId, JsonDoc, UTCDateTime

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


class Event(Base):
    """One accepted touchpoint event. Appended once; only processing fields change."""

    __tablename__ = "events"
    __table_args__ = (
        UniqueConstraint("workspace_id", "message_id", name="uq_events_workspace_message"),
        Index("ix_events_batch", "batch_id"),
        Index("ix_events_status", "workspace_id", "status"),
        Index("ix_events_received", "workspace_id", "received_at"),
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
    status: Mapped[str] = mapped_column(String(16), default=EVENT_PENDING)
    batch_id: Mapped[int | None] = mapped_column(BigId, nullable=True)
    profile_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    processed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class Batch(Base):
    """A group of events that crosses the broker as one message (the outbox row)."""

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


#: Core tables for bulk statements (typed for mypy).
EVENTS = cast(Table, Event.__table__)
BATCHES = cast(Table, Batch.__table__)
