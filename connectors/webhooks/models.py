"""Tables of the downstream webhooks: endpoints, their secrets, deliveries and attempts.

Why secrets have a table of their own: rotating a secret keeps the old one valid for a
grace period, during which deliveries are signed with both (receivers switch over at their
own pace). An endpoint therefore has one or more secret rows; the newest is the current
one, the others carry the ``expires_at`` after which nobody signs with them.

Why the secret is stored as it is (not hashed): the hub itself signs with it, so it must be
able to read it back. It is never logged and never returned by a listing, only once on
creation and on rotation.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, Float, ForeignKey, Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.sql.elements import TextClause

from pipeline.db import Base, BigId, JsonDoc, UTCDateTime


class WebhookEndpoint(Base):
    """One receiver of profile events: where, which event types, on or off."""

    __tablename__ = "webhook_endpoints"
    __table_args__ = (Index("ix_webhook_endpoints_workspace", "workspace_id", "id"),)

    #: ``whe_`` + a UUIDv7 in hex: time-ordered, so a listing is in creation order
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(String(63), ForeignKey("workspaces.id"))
    url: Mapped[str] = mapped_column(String(2048))
    description: Mapped[str] = mapped_column(Text, default="")
    #: event-type filter (exact types or ``prefix.*``/``*`` patterns); empty: every event
    events: Mapped[list[str]] = mapped_column(JsonDoc)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    #: why the hub (not an operator) turned it off, e.g. after failing deliveries
    disabled_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    #: the first failed attempt since the last success (an endpoint failing longer than
    #: the retry schedule is disabled); ``None`` while it answers
    failing_since: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    #: one dispatcher at a time sends to an endpoint (per-profile order, one slow
    #: receiver holds one worker thread): it holds the lease until ``lease_until``
    lease_token: Mapped[str | None] = mapped_column(String(40), nullable=True)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class WebhookSecret(Base):
    """One signing secret of an endpoint; ``expires_at`` is set when a newer one replaced it."""

    __tablename__ = "webhook_secrets"
    __table_args__ = (Index("ix_webhook_secrets_endpoint", "endpoint_id", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    workspace_id: Mapped[str] = mapped_column(String(63), ForeignKey("workspaces.id"))
    endpoint_id: Mapped[str] = mapped_column(String(40), ForeignKey("webhook_endpoints.id"))
    secret: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    #: ``None`` for the current secret; after a rotation, the end of the old one's grace
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    def __repr__(self) -> str:  # never the secret itself, not even in a traceback
        return f"WebhookSecret(id={self.id!r}, endpoint_id={self.endpoint_id!r})"


#: a delivery still to be sent (never tried, or waiting for its next attempt)
PENDING = "pending"
RETRYING = "retrying"
DELIVERED = "delivered"
#: gave up: the retry schedule ran out (or the endpoint said ``410 Gone``)
FAILED = "failed"
OPEN_STATES = (PENDING, RETRYING)
STATES = (PENDING, RETRYING, DELIVERED, FAILED)


def open_condition(table: str | None = None) -> TextClause:
    """``state IN ('pending', 'retrying')`` as literal SQL (of ``table``, or unqualified).

    Why literal: SQLite uses a partial index only when the query repeats the index's
    condition itself (a bound ``IN (?, ?)`` does not), so indexes and queries share this.
    """
    states = ", ".join(f"'{state}'" for state in OPEN_STATES)  # constants, not input
    return text(f"{table + '.' if table else ''}state IN ({states})")


_OPEN = open_condition()
#: the condition for queries on ``webhook_deliveries`` itself
OPEN_PREDICATE = open_condition("webhook_deliveries")


class WebhookDelivery(Base):
    """One message for one endpoint: the exact body signed and sent, and where it stands.

    ``change_id`` is the newest profile change it carries (several when a burst of updates
    was coalesced into it) and doubles as the payload's per-profile ``version``: the change
    feed's ids only grow, so a consumer keeps whichever version is highest.
    """

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        Index("ix_webhook_deliveries_workspace", "workspace_id", "id"),
        # the open deliveries of each profile for an endpoint, oldest first: the head is
        # sent, the others wait (order is kept per profile); delivered history stays out
        Index(
            "ix_webhook_deliveries_profile",
            "endpoint_id",
            "profile_id",
            "id",
            sqlite_where=_OPEN,
            postgresql_where=_OPEN,
        ),
        Index(
            "ix_webhook_deliveries_due",
            "endpoint_id",
            "next_attempt_at",
            sqlite_where=_OPEN,
            postgresql_where=_OPEN,
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    #: the ``webhook-id`` header: ``msg_`` + a UUIDv7 in hex, the same on every retry
    message_id: Mapped[str] = mapped_column(String(40), unique=True)
    workspace_id: Mapped[str] = mapped_column(String(63), ForeignKey("workspaces.id"))
    endpoint_id: Mapped[str] = mapped_column(String(40), ForeignKey("webhook_endpoints.id"))
    profile_id: Mapped[str] = mapped_column(String(40))
    type: Mapped[str] = mapped_column(String(120))
    change_id: Mapped[int] = mapped_column(BigInteger)
    #: how many changes this delivery carries (a coalesced burst counts each)
    coalesced: Mapped[int] = mapped_column(Integer, default=1)
    #: made by a replay (``POST /v1/webhooks/endpoints/{id}/replay``), not by the feed
    replay: Mapped[bool] = mapped_column(Boolean, default=False)
    body: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_status: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class WebhookAttempt(Base):
    """One POST of a delivery: the delivery log (status, latency, a capped answer)."""

    __tablename__ = "webhook_attempts"
    __table_args__ = (Index("ix_webhook_attempts_delivery", "delivery_id", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    workspace_id: Mapped[str] = mapped_column(String(63), ForeignKey("workspaces.id"))
    delivery_id: Mapped[int] = mapped_column(BigId, ForeignKey("webhook_deliveries.id"))
    number: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    status: Mapped[int | None] = mapped_column(Integer, nullable=True)
    latency_ms: Mapped[float] = mapped_column(Float)
    outcome: Mapped[str] = mapped_column(String(16))
    response: Mapped[str] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)


class WebhookCursor(Base):
    """How far the workspace's change feed has been turned into deliveries."""

    __tablename__ = "webhook_cursors"

    workspace_id: Mapped[str] = mapped_column(
        String(63), ForeignKey("workspaces.id"), primary_key=True
    )
    change_id: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


__all__ = [
    "DELIVERED",
    "FAILED",
    "OPEN_PREDICATE",
    "OPEN_STATES",
    "PENDING",
    "RETRYING",
    "STATES",
    "WebhookAttempt",
    "WebhookCursor",
    "WebhookDelivery",
    "WebhookEndpoint",
    "WebhookSecret",
    "open_condition",
]
