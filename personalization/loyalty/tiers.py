"""Tiers: the measure over the rolling window, the tier it reaches, and tier changes.

Why a change is written to the profile change feed (``identity.changes``): it is written
in the transaction of the ledger change that caused it, so a subscriber reading the feed
in id order (downstream webhooks, rules reacting to ``loyalty.tier_changed``) hears of
every change exactly once and never of one that was rolled back. It is not appended to
the event log as a touchpoint: it is derived state, not something a customer did on a
channel, and the log stays the record of what happened at the touchpoints.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
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
from pipeline.db import in_list
from pipeline.models import Event

TIER_CHANGED: Final = "loyalty.tier_changed"
_CHUNK = 400
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
    return measures(session, workspace_id, dict.fromkeys(profiles, ""), now, config).get("", 0.0)


def _total(properties: dict[str, Any] | None) -> float:
    value = (properties or {}).get("total")
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def measures(
    session: Session,
    workspace_id: str,
    owner: Mapping[str, str],
    now: datetime,
    config: LoyaltyConfig,
) -> dict[str, float]:
    """:func:`measure` of many families at once: ``owner`` maps member -> survivor."""
    found = {survivor: 0.0 for survivor in owner.values()}
    since = window_start(now, config)
    members = sorted(owner)
    for start in range(0, len(members), _CHUNK):
        part = members[start : start + _CHUNK]
        if config.tier_measure == "spend":
            rows = session.execute(
                select(ProfileEvent.profile_id, Event.type, Event.properties)
                .join(ProfileEvent, ProfileEvent.event_id == Event.id)
                .where(
                    ProfileEvent.workspace_id == workspace_id,
                    in_list(session, ProfileEvent.profile_id, part),
                    ProfileEvent.occurred_at > since,
                    ProfileEvent.occurred_at <= now,
                    Event.type.in_(sorted(SPEND_TYPES)),
                )
            )
            for member, kind, props in rows:
                found[owner[member]] += SPEND_TYPES[kind] * _total(props)
            continue
        e = LoyaltyEntry
        for member, total in session.execute(
            select(e.profile_id, func.sum(e.points))
            .where(
                e.workspace_id == workspace_id,
                in_list(session, e.profile_id, part),
                e.kind.in_([EARN, ADJUST]),
                e.created_at > since,
                e.created_at <= now,
            )
            .group_by(e.profile_id)
        ):
            found[owner[member]] += float(total or 0)
    if config.tier_measure == "spend":
        found = {survivor: round(value, 2) for survivor, value in found.items()}
    return found


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
    return apply_tier(session, account, value, now=now, config=config, source=source)


def apply_tier(
    session: Session,
    account: LoyaltyAccount,
    value: float,
    *,
    now: datetime,
    config: LoyaltyConfig,
    source: str,
) -> TierChange | None:
    """The tier ``value`` of the measure reaches (never below the floor), stored and fed."""
    change = tier_change(account.tier, account.tier_floor, value, config)
    if change is None:
        return None
    account.tier, account.tier_since, account.updated_at = change.current, now, now
    feed_tier_change(
        session,
        account.workspace_id,
        account.profile_id,
        change,
        now=now,
        config=config,
        source=source,
    )
    return change


def tier_change(
    held: str | None, floor: str | None, value: float, config: LoyaltyConfig
) -> TierChange | None:
    """The change from ``held`` that ``value`` of the measure makes, if any (pure)."""
    tier = effective_tier(tier_for(value, config.tiers), floor, config)
    return None if tier == held else TierChange(held, tier, value)


def feed_tier_change(
    session: Session,
    workspace_id: str,
    profile_id: str,
    change: TierChange,
    *,
    now: datetime,
    config: LoyaltyConfig,
    source: str,
) -> None:
    """Write ``loyalty.tier_changed`` to the profile change feed (see the module doc)."""
    rank = config.tier_rank
    record_change(
        session,
        workspace_id,
        TIER_CHANGED,
        profile_id,
        {
            "from": change.previous,
            "to": change.current,
            "direction": "up" if rank(change.current) > rank(change.previous) else "down",
            "measure": config.tier_measure,
            "value": change.measure,
            "source": source,
            "at": now.isoformat(),
        },
    )


__all__ = [
    "SPEND_TYPES",
    "TIER_CHANGED",
    "TierChange",
    "apply_tier",
    "feed_tier_change",
    "measure",
    "measures",
    "refresh_tier",
    "tier_change",
]
