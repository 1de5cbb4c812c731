"""GDPR erasure and export of what the hub sent (or was about to send) about a person.

Why deliveries need erasing: a delivery's body is the profile's state as sent (traits,
identifiers), and a receiver's answer may echo it. After an erasure nothing of the person
may leave the hub any more: their open deliveries are given up unsent, every body is
replaced by a marker and every stored answer emptied. The ``profile.erased`` message
itself is made later, by the fan-out, from the erasure's own change (no personal data).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from connectors.webhooks.deliveries import delivery_view
from connectors.webhooks.models import (
    FAILED,
    OPEN_STATES,
    WebhookAttempt,
    WebhookDelivery,
)
from pipeline.db import in_list

ERASED_BODY = '{"erased":true}'
ERASED_ERROR = "the profile was erased before this delivery was sent"


def erase_deliveries(
    session: Session, workspace_id: str, profile_ids: Sequence[str], *, now: datetime
) -> dict[str, int]:
    """Scrub the person's deliveries and their attempts' answers; counts for the summary."""
    d, a = WebhookDelivery, WebhookAttempt
    ids = list(profile_ids)
    mine = (d.workspace_id == workspace_id, in_list(session, d.profile_id, ids))
    cancelled = session.execute(
        update(d)
        .where(*mine, d.state.in_(OPEN_STATES))
        .values(state=FAILED, last_error=ERASED_ERROR, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    scrubbed = session.execute(
        update(d)
        .where(*mine, d.body != ERASED_BODY)
        .values(body=ERASED_BODY)
        .execution_options(synchronize_session=False)
    )
    session.execute(
        update(a)
        .where(a.delivery_id.in_(select(d.id).where(*mine)), a.response != "")
        .values(response="")
        .execution_options(synchronize_session=False)
    )
    return {
        "webhook_deliveries": int(scrubbed.rowcount),  # type: ignore[attr-defined]
        "webhook_deliveries_cancelled": int(cancelled.rowcount),  # type: ignore[attr-defined]
    }


def export_deliveries(
    session: Session, workspace_id: str, profile_ids: Sequence[str]
) -> list[dict[str, Any]]:
    """The deliveries about the person, with what each carried."""
    rows = session.scalars(
        select(WebhookDelivery)
        .where(
            WebhookDelivery.workspace_id == workspace_id,
            in_list(session, WebhookDelivery.profile_id, list(profile_ids)),
        )
        .order_by(WebhookDelivery.id)
    )
    return [delivery_view(row, with_body=True) for row in rows]


__all__ = ["ERASED_BODY", "erase_deliveries", "export_deliveries"]
