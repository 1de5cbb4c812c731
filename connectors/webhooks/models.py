"""Tables of the downstream webhooks: the endpoints to call and their signing secrets.

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

from sqlalchemy import Boolean, ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

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


__all__ = ["WebhookEndpoint", "WebhookSecret"]
