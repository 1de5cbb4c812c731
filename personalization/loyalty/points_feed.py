"""``loyalty.points_changed`` on the profile change feed: every entry that moves a balance.

Why one change per entry (an expiry run: one per account): a subscriber (a shop showing
the balance, a warehouse keeping the ledger) needs both what happened and where the
balance stands after it, in the order the ledger wrote them. Written in the transaction
of the entry, so a rolled-back award is never announced.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

from identity.changes import NewChange

POINTS_CHANGED: Final = "loyalty.points_changed"


def points_changed(
    profile_id: str,
    *,
    kind: str,
    points: int,
    balance: int,
    at: datetime,
    entry_id: int | None = None,
    reason: str | None = None,
    source: str | None = None,
    event_id: int | None = None,
    reward_id: str | None = None,
) -> NewChange:
    """The feed entry for ``points`` posted as ``kind``, leaving ``balance``."""
    data: dict[str, Any] = {
        "entry_id": entry_id,
        "kind": kind,
        "points": points,
        "balance": balance,
        "reason": reason,
        "source": source,
        "event_id": event_id,
        "reward_id": reward_id,
        "at": at.isoformat(),
    }
    return POINTS_CHANGED, profile_id, data


__all__ = ["POINTS_CHANGED", "points_changed"]
