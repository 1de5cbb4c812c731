"""Retention of the delivery log: kept ``ECRM_WEBHOOK_RETENTION_DAYS``, like the feed.

Why prune: every profile change writes a feed row, a delivery per endpoint (with the
exact body, which holds the profile's personal data) and an attempt row per POST. Kept
forever, the three tables grow with the hub's whole history and the bodies outlive any
need for them. What goes, once older than the horizon:

* finished deliveries (``delivered``, ``failed``) not touched since, with their attempts;
  open ones stay however old: they are still owed to the receiver;
* change feed rows the fan-out has passed (``replay`` reaches back as far as the feed is
  kept): identity owns the feed, so :func:`workers.webhooks_dispatch.prune` removes
  those with :func:`identity.changes.delete_changes_before`.

How it stays cheap on big tables: ids grow with time, so the horizon is the first id
created after it, found by walking the primary key over only the rows about to go; rows
are then deleted by id in chunks, each chunk its own short transaction (SQLite's single
write lock is never held for long, and a crash loses nothing but the rest of the run).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import cast

from sqlalchemy import Table, delete, select
from sqlalchemy.orm import Session

from connectors.webhooks.models import (
    DELIVERED,
    FAILED,
    WebhookAttempt,
    WebhookDelivery,
)
from pipeline import Database
from pipeline.db import deleted, first_id_since, in_list, in_write_chunks

DELIVERIES = cast(Table, WebhookDelivery.__table__)
ATTEMPTS = cast(Table, WebhookAttempt.__table__)
CHUNK = 1000
#: rows of each kind one run removes at most (the next hourly run goes on)
MOST = 200_000


@dataclass(frozen=True)
class Pruned:
    """What one run removed."""

    deliveries: int = 0
    attempts: int = 0
    changes: int = 0

    def view(self) -> dict[str, int]:
        return {"deliveries": self.deliveries, "attempts": self.attempts, "changes": self.changes}


def prune_deliveries(db: Database, horizon: datetime, *, most: int = MOST) -> tuple[int, int]:
    """Remove finished deliveries untouched since before ``horizon``: (deliveries, attempts)."""
    with db.read() as session:
        below = first_id_since(session, DELIVERIES, horizon)
    answers: list[int] = []

    def step(session: Session) -> int:
        gone, removed = _delete_deliveries(session, below, horizon)
        answers.append(removed)
        return gone

    return in_write_chunks(db, step, CHUNK, most), sum(answers)


def _delete_deliveries(session: Session, below: int, horizon: datetime) -> tuple[int, int]:
    d = DELIVERIES.c
    ids = list(
        session.scalars(
            select(d.id)
            .where(d.id < below, d.state.in_((DELIVERED, FAILED)), d.updated_at < horizon)
            .order_by(d.id)
            .limit(CHUNK)
        )
    )
    if not ids:
        return 0, 0
    a = ATTEMPTS.c
    answers = deleted(session, delete(ATTEMPTS).where(in_list(session, a.delivery_id, ids)))
    gone = deleted(session, delete(DELIVERIES).where(in_list(session, d.id, ids)))
    return gone, answers


__all__ = ["CHUNK", "MOST", "Pruned", "prune_deliveries"]
