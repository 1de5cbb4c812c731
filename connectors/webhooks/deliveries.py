"""The delivery log: list deliveries, show one with its attempts, retry one.

A delivery's public id is its ``message_id`` (``msg_…``): the ``webhook-id`` header the
receiver saw, so an operator can go from a receiver's log line straight to the attempts.
Listings are newest first with a ``before`` cursor (the internal id of the last row).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from connectors.webhooks.models import (
    OPEN_STATES,
    PENDING,
    RETRYING,
    STATES,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
)
from pipeline.errors import HubError, ValidationError

MAX_LIMIT = 500


class DeliveryNotFound(HubError):
    """No delivery with this id in the workspace (HTTP 404, CLI exit 2)."""

    def __init__(self, message_id: str) -> None:
        super().__init__(f"no webhook delivery {message_id!r}")
        self.message_id = message_id


class EndpointDisabled(HubError):
    """A retry was asked for a delivery whose endpoint is switched off (HTTP 409)."""


def delivery_view(row: WebhookDelivery, *, with_body: bool = False) -> dict[str, Any]:
    """A delivery as JSON-ready data (the payload only when asked: it holds profile data)."""
    view: dict[str, Any] = {
        "id": row.message_id,
        "endpoint_id": row.endpoint_id,
        "type": row.type,
        "profile_id": row.profile_id,
        "version": row.change_id,
        "status": row.state,
        "attempts": row.attempts,
        "coalesced": row.coalesced,
        "replay": row.replay,
        "next_attempt_at": row.next_attempt_at.isoformat() if row.state in OPEN_STATES else None,
        "last_status": row.last_status,
        "last_error": row.last_error,
        "created_at": row.created_at.isoformat(),
        "delivered_at": row.delivered_at.isoformat() if row.delivered_at else None,
    }
    if with_body:
        view["payload"] = json.loads(row.body)
    return view


def list_deliveries(
    session: Session,
    workspace_id: str,
    *,
    endpoint_id: str | None = None,
    status: str | None = None,
    profile_id: str | None = None,
    before: int | None = None,
    limit: int = 100,
) -> tuple[list[dict[str, Any]], int | None]:
    """Deliveries newest first, filtered; and the ``before`` cursor of the next page."""
    if status is not None and status not in STATES:
        raise ValidationError("status", f"must be one of {', '.join(STATES)}")
    if not 1 <= limit <= MAX_LIMIT:
        raise ValidationError("limit", f"must be 1..{MAX_LIMIT}")
    d = WebhookDelivery
    query = select(d).where(d.workspace_id == workspace_id)
    if endpoint_id:
        query = query.where(d.endpoint_id == endpoint_id)
    if status:
        query = query.where(d.state == status)
    if profile_id:
        query = query.where(d.profile_id == profile_id)
    if before is not None:
        query = query.where(d.id < before)
    rows = session.scalars(query.order_by(d.id.desc()).limit(limit)).all()
    cursor = rows[-1].id if len(rows) == limit else None
    return [delivery_view(row) for row in rows], cursor


def _find(session: Session, workspace_id: str, message_id: str) -> WebhookDelivery:
    row = session.scalars(
        select(WebhookDelivery).where(
            WebhookDelivery.workspace_id == workspace_id,
            WebhookDelivery.message_id == message_id,
        )
    ).first()
    if row is None:
        raise DeliveryNotFound(message_id)
    return row


def get_delivery(session: Session, workspace_id: str, message_id: str) -> dict[str, Any]:
    """One delivery with its payload and every attempt (raises :class:`DeliveryNotFound`)."""
    row = _find(session, workspace_id, message_id)
    attempts = session.scalars(
        select(WebhookAttempt)
        .where(WebhookAttempt.delivery_id == row.id)
        .order_by(WebhookAttempt.id)
    ).all()
    view = delivery_view(row, with_body=True)
    view["log"] = [
        {
            "attempt": a.number,
            "started_at": a.started_at.isoformat(),
            "status": a.status,
            "latency_ms": a.latency_ms,
            "outcome": a.outcome,
            "response": a.response,
            "error": a.error,
        }
        for a in attempts
    ]
    return view


def retry_delivery(
    session: Session, workspace_id: str, message_id: str, *, now: datetime
) -> dict[str, Any]:
    """Send a delivery again now, whatever its state (one more attempt, same webhook-id).

    A failed (given-up) or delivered one is reopened; it is its profile's oldest open
    delivery, so it goes out before the newer ones of that profile. Raises
    :class:`EndpointDisabled` while its endpoint is off (enable it first).
    """
    row = _find(session, workspace_id, message_id)
    endpoint = session.get(WebhookEndpoint, row.endpoint_id)
    if endpoint is None or not endpoint.enabled:
        raise EndpointDisabled(
            f"endpoint {row.endpoint_id} is disabled; enable it before retrying its deliveries"
        )
    d = WebhookDelivery
    session.execute(
        update(d)
        .where(d.id == row.id)
        .values(
            state=RETRYING if row.state == RETRYING else PENDING,
            next_attempt_at=now,
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    session.refresh(row)
    return delivery_view(row)


__all__ = [
    "DeliveryNotFound",
    "EndpointDisabled",
    "delivery_view",
    "get_delivery",
    "list_deliveries",
    "retry_delivery",
]
