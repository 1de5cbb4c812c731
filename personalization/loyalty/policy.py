"""The pure parts of the programme: FIFO lots, expiry dates, tiers (no database).

Why lots are replayed rather than stored: the ledger is append-only, so what is left of
each earning is a function of the entries in id order. Every credit (an ``earn``, or a
positive ``adjust``) opens a lot; every debit (``redeem``, a negative ``adjust``)
consumes the oldest lots first (FIFO); an ``expire`` entry closes exactly the lot it
names (``lot_id``). The ledger writer expires a profile's due lots before any debit, so a
debit never spends points that were already past their date, and replaying the same
entries always gives the same lots.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from personalization.loyalty.config import LoyaltyConfig, Tier

EARN = "earn"
REDEEM = "redeem"
EXPIRE = "expire"
ADJUST = "adjust"
KINDS = (EARN, REDEEM, EXPIRE, ADJUST)


@dataclass(frozen=True)
class Line:
    """What replaying needs of one ledger entry."""

    id: int
    kind: str
    points: int
    expires_at: datetime | None = None
    lot_id: int | None = None


@dataclass
class Lot:
    """One credit and what is left of it."""

    entry_id: int
    points: int
    remaining: int
    expires_at: datetime | None


def replay(lines: Iterable[Line]) -> list[Lot]:
    """Every lot the entries opened, in earning order, with what is left of each."""
    lots: list[Lot] = []
    by_id: dict[int, Lot] = {}
    for line in sorted(lines, key=lambda item: item.id):
        if line.points > 0:
            lot = Lot(line.id, line.points, line.points, line.expires_at)
            lots.append(lot)
            by_id[line.id] = lot
        elif line.kind == EXPIRE and line.lot_id in by_id:
            target = by_id[line.lot_id]
            target.remaining += line.points
        elif line.points < 0:
            consume(lots, -line.points)
    return lots


def consume(lots: Sequence[Lot], points: int) -> int:
    """Take ``points`` from the oldest lots first; what could not be taken (0 if all)."""
    for lot in lots:
        if points <= 0:
            break
        taken = min(lot.remaining, points)
        if taken > 0:
            lot.remaining -= taken
            points -= taken
    return points


def due(lots: Iterable[Lot], now: datetime) -> list[Lot]:
    """Lots with points left whose expiry has come."""
    return [lot for lot in lots if lot.remaining > 0 and lot.expires_at and lot.expires_at <= now]


def next_expiry(lots: Iterable[Lot]) -> datetime | None:
    """When the next lot with points left expires (``None``: nothing will)."""
    dates = [lot.expires_at for lot in lots if lot.remaining > 0 and lot.expires_at is not None]
    return min(dates) if dates else None


def add_months(at: datetime, months: int) -> datetime:
    """The same day and time ``months`` calendar months later (31 Jan + 1 = 28/29 Feb)."""
    month_index = at.month - 1 + months
    year, month = at.year + month_index // 12, month_index % 12 + 1
    day = min(at.day, calendar.monthrange(year, month)[1])
    return at.replace(year=year, month=month, day=day)


def expiry_for(earned_at: datetime, config: LoyaltyConfig) -> datetime | None:
    return add_months(earned_at, config.expiry_months) if config.expiry_months else None


def window_start(now: datetime, config: LoyaltyConfig) -> datetime:
    return now - timedelta(days=config.tier_window_days)


def tier_for(measure: float, tiers: Sequence[Tier]) -> str | None:
    """The highest tier whose threshold ``measure`` reaches (tiers ascend)."""
    reached = [tier.name for tier in tiers if measure >= tier.threshold]
    return reached[-1] if reached else None


def effective_tier(computed: str | None, floor: str | None, config: LoyaltyConfig) -> str | None:
    """The computed tier, but never below a floor set by hand or by a rule."""
    if floor is None or config.tier_rank(floor) <= config.tier_rank(computed):
        return computed
    return floor


def next_tier(measure: float, tiers: Sequence[Tier]) -> tuple[str, float] | None:
    """The next tier up and how much more of the measure it needs."""
    for tier in tiers:
        if measure < tier.threshold:
            return tier.name, tier.threshold - measure
    return None


__all__ = [
    "ADJUST",
    "EARN",
    "EXPIRE",
    "KINDS",
    "REDEEM",
    "Line",
    "Lot",
    "add_months",
    "consume",
    "due",
    "effective_tier",
    "expiry_for",
    "next_expiry",
    "next_tier",
    "replay",
    "tier_for",
    "window_start",
]
