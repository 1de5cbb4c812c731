"""Tiers: the measure over the rolling window, the tier it reaches, and tier changes.

Why a change is written to the profile change feed (``identity.changes``): it is written
in the transaction of the ledger change that caused it, so a subscriber reading the feed
in id order (downstream webhooks, rules reacting to ``loyalty.tier_changed``) hears of
every change exactly once and never of one that was rolled back. It is not appended to
the event log as a touchpoint: it is derived state, not something a customer did on a
channel, and the log stays the record of what happened at the touchpoints.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from identity.changes import record_change
from identity.models import ProfileEvent
from personalization.loyalty.config import LoyaltyConfig
from personalization.loyalty.models import LoyaltyAccount, LoyaltyEntry
from personalization.loyalty.policy import ADJUST, EARN, effective_tier, tier_for, window_start
from pipeline.models import Event

TIER_CHANGED: Final = "loyalty.tier_changed"
#: events whose ``total`` property counts as spend (a refund counts negatively)
SPEND_TYPES = {"order.completed": 1, "order.refunded": -1}


@dataclass(frozen=True)
class TierChange:
    previous: str | None
    current: str | None
    measure: float


def measure(
    session: Session,
    workspace_id: str,
    profiles: Collection[str],
    now: datetime,
    config: LoyaltyConfig,
) -> float:
    """Points earned (``earn`` and ``adjust`` entries) or spend in the window up to now."""
    since = window_start(now, config)
    ids = sorted(profiles)
    if config.tier_measure == "spend":
        rows = session.execute(
            select(Event.type, Event.properties)
            .join(ProfileEvent, ProfileEvent.event_id == Event.id)
            .where(
                ProfileEvent.workspace_id == workspace_id,
                ProfileEvent.profile_id.in_(ids),
                ProfileEvent.occurred_at > since,
                ProfileEvent.occurred_at <= now,
                Event.type.in_(sorted(SPEND_TYPES)),
            )
        )
        return round(sum(SPEND_TYPES[kind] * _total(props) for kind, props in rows), 2)
    e = LoyaltyEntry
    total = session.scalar(
        select(func.coalesce(func.sum(e.points), 0)).where(
            e.workspace_id == workspace_id,
            e.profile_id.in_(ids),
            e.kind.in_([EARN, ADJUST]),
            e.created_at > since,
            e.created_at <= now,
        )
    )
    return float(total or 0)


def _total(properties: dict[str, Any] | None) -> float:
    value = (properties or {}).get("total")
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def refresh_tier(
    session: Session,
    account: LoyaltyAccount,
    profiles: Collection[str],
    *,
    now: datetime,
    config: LoyaltyConfig,
    source: str,
) -> TierChange | None:
    """Recompute the (locked) account's tier; a change is stored and fed as an event."""
    value = measure(session, account.workspace_id, profiles, now, config)
    tier = effective_tier(tier_for(value, config.tiers), account.tier_floor, config)
    if tier == account.tier:
        return None
    change = TierChange(account.tier, tier, value)
    account.tier, account.tier_since, account.updated_at = tier, now, now
    direction = "up" if config.tier_rank(tier) > config.tier_rank(change.previous) else "down"
    record_change(
        session,
        account.workspace_id,
        TIER_CHANGED,
        account.profile_id,
        {
            "from": change.previous,
            "to": tier,
            "direction": direction,
            "measure": config.tier_measure,
            "value": value,
            "source": source,
            "at": now.isoformat(),
        },
    )
    return change


__all__ = ["SPEND_TYPES", "TIER_CHANGED", "TierChange", "measure", "refresh_tier"]
