"""Writing the ledger: award, deduct, adjust, redeem a reward, set a tier, expire.

Every change runs the same steps in the caller's transaction::

    resolve the survivor ─► lock its account ─► idempotency key seen? ─► return that entry
                                                │ no
    replay the family's entries into lots ─► expire the lots now due ─► check the balance
    ─► append the entry ─► next expiry, tier (a change is fed as loyalty.tier_changed)

An idempotency key is unique per workspace: a rule passes ``rule:{id}:{event}`` so a
retried batch finds its award already written and awards nothing more.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session
from uuid6 import uuid7

from identity.changes import record_changes
from personalization.loyalty import accounts
from personalization.loyalty.config import LoyaltyConfig
from personalization.loyalty.errors import (
    IdempotencyConflict,
    InsufficientPoints,
    ProfileNotFound,
    UnknownReward,
)
from personalization.loyalty.models import ENTRIES, LoyaltyAccount, LoyaltyEntry
from personalization.loyalty.points_feed import points_changed
from personalization.loyalty.policy import (
    ADJUST,
    EARN,
    EXPIRE,
    REDEEM,
    Lot,
    consume,
    due,
    expiry_for,
    next_expiry,
    replay,
)
from personalization.loyalty.tiers import TierChange, refresh_tier
from pipeline.db import dialect_insert
from pipeline.envelope import utcnow
from pipeline.errors import ValidationError

DEFAULT_CONFIG = LoyaltyConfig()
EXPIRY_SOURCE = "expiry"
MAX_POINTS = 10_000_000


@dataclass(frozen=True)
class Posted:
    """What a ledger change did: the entry (new, or the one its key named) and after it."""

    entry: dict[str, Any]
    created: bool
    balance: int
    tier: str | None
    tier_change: TierChange | None = None
    #: points of due lots expired before this change
    expired: int = 0


@dataclass(frozen=True)
class ExpiryRun:
    profiles: int
    entries: int
    points: int


def entry_view(entry: LoyaltyEntry) -> dict[str, Any]:
    return {
        "id": entry.id,
        "profile_id": entry.profile_id,
        "kind": entry.kind,
        "points": entry.points,
        "reason": entry.reason,
        "source": entry.source,
        "event_id": entry.event_id,
        "reward_id": entry.reward_id,
        "lot_id": entry.lot_id,
        "expires_at": entry.expires_at.isoformat() if entry.expires_at else None,
        "created_at": entry.created_at.isoformat(),
    }


def award(
    session: Session,
    workspace_id: str,
    profile_id: str,
    points: int,
    *,
    reason: str,
    source: str,
    event_id: int | None = None,
    key: str | None = None,
    now: datetime | None = None,
    config: LoyaltyConfig = DEFAULT_CONFIG,
) -> Posted:
    """Credit earned ``points`` (> 0); they expire by the programme's policy."""
    _positive(points)
    return _post(
        session,
        workspace_id,
        profile_id,
        EARN,
        points,
        reason,
        source,
        event_id=event_id,
        key=key,
        now=now,
        config=config,
    )


def deduct(
    session: Session,
    workspace_id: str,
    profile_id: str,
    points: int,
    *,
    reason: str,
    source: str,
    event_id: int | None = None,
    key: str | None = None,
    now: datetime | None = None,
    config: LoyaltyConfig = DEFAULT_CONFIG,
) -> Posted:
    """Spend ``points`` (> 0), oldest first; :class:`InsufficientPoints` over the balance."""
    _positive(points)
    return _post(
        session,
        workspace_id,
        profile_id,
        REDEEM,
        -points,
        reason,
        source,
        event_id=event_id,
        key=key,
        now=now,
        config=config,
    )


def adjust(
    session: Session,
    workspace_id: str,
    profile_id: str,
    points: int,
    *,
    reason: str,
    source: str,
    event_id: int | None = None,
    key: str | None = None,
    now: datetime | None = None,
    config: LoyaltyConfig = DEFAULT_CONFIG,
) -> Posted:
    """A correction by hand, signed (never below a zero balance); it counts for tiers."""
    if not isinstance(points, int) or isinstance(points, bool) or points == 0:
        raise ValidationError("points", "must be a whole number other than 0")
    if abs(points) > MAX_POINTS:
        raise ValidationError("points", f"at most {MAX_POINTS} at once")
    return _post(
        session,
        workspace_id,
        profile_id,
        ADJUST,
        points,
        reason,
        source,
        event_id=event_id,
        key=key,
        now=now,
        config=config,
    )


def redeem_reward(
    session: Session,
    workspace_id: str,
    profile_id: str,
    reward_id: str,
    *,
    source: str,
    key: str | None = None,
    now: datetime | None = None,
    config: LoyaltyConfig = DEFAULT_CONFIG,
) -> Posted:
    """Redeem a catalogue reward for its points (``InsufficientPoints`` names ``reward``)."""
    reward = config.reward(reward_id)
    if reward is None:
        raise UnknownReward(reward_id)
    return _post(
        session,
        workspace_id,
        profile_id,
        REDEEM,
        -reward.points,
        f"reward: {reward.name}",
        source,
        key=key,
        now=now,
        config=config,
        reward_id=reward.id,
    )


def set_tier(
    session: Session,
    workspace_id: str,
    profile_id: str,
    tier: str | None,
    *,
    source: str,
    now: datetime | None = None,
    config: LoyaltyConfig = DEFAULT_CONFIG,
) -> str | None:
    """Keep the profile at ``tier`` at least (``None`` lifts the floor); the tier now."""
    if tier is not None and config.tier_rank(tier) < 1:
        names = ", ".join(t.name for t in config.tiers) or "none configured"
        raise ValidationError("tier", f"{tier!r} is not a tier ({names})")
    now = now or utcnow()
    survivor = accounts.survivor_id(session, workspace_id, profile_id)
    account = accounts.lock_account(session, workspace_id, survivor, now)
    account.tier_floor, account.updated_at = tier, now
    members = accounts.family(session, workspace_id, survivor)
    refresh_tier(session, account, members, now=now, config=config, source=source)
    return account.tier


def recompute_tier(
    session: Session,
    workspace_id: str,
    profile_id: str,
    *,
    source: str,
    now: datetime | None = None,
    config: LoyaltyConfig = DEFAULT_CONFIG,
) -> TierChange | None:
    """Recompute the tier without a ledger change (spend measured tiers, after an order)."""
    now = now or utcnow()
    survivor = accounts.survivor_id(session, workspace_id, profile_id)
    account = accounts.lock_account(session, workspace_id, survivor, now)
    members = accounts.family(session, workspace_id, survivor)
    return refresh_tier(session, account, members, now=now, config=config, source=source)


def expire_due(
    session: Session,
    workspace_id: str,
    now: datetime | None = None,
    *,
    config: LoyaltyConfig = DEFAULT_CONFIG,
    limit: int = 1000,
) -> ExpiryRun:
    """Expire what is left of every lot whose date has come (idempotent: run it often)."""
    now = now or utcnow()
    due_accounts = list(
        session.scalars(
            select(LoyaltyAccount.profile_id)
            .where(
                LoyaltyAccount.workspace_id == workspace_id,
                LoyaltyAccount.next_expiry_at <= now,
            )
            .order_by(LoyaltyAccount.next_expiry_at)
            .limit(limit)
        )
    )
    entries = points = 0
    for profile_id in due_accounts:
        written, expired = expire_account(session, workspace_id, profile_id, now, config)
        entries, points = entries + written, points + expired
    return ExpiryRun(profiles=len(due_accounts), entries=entries, points=points)


def expire_account(
    session: Session, workspace_id: str, profile_id: str, now: datetime, config: LoyaltyConfig
) -> tuple[int, int]:
    """Expire one account's due lots (written entries, points), the tier refreshed after."""
    try:
        survivor = accounts.survivor_id(session, workspace_id, profile_id)
    except ProfileNotFound:  # the profile row is gone: its own entries still count
        survivor = profile_id
    if survivor != profile_id:  # merged away: the survivor's account carries its lots
        session.execute(
            update(LoyaltyAccount)
            .where(
                LoyaltyAccount.workspace_id == workspace_id,
                LoyaltyAccount.profile_id == profile_id,
            )
            .values(next_expiry_at=None, updated_at=now)
        )
    account = accounts.lock_account(session, workspace_id, survivor, now)
    members = accounts.family(session, workspace_id, survivor)
    lots = replay(accounts.lines(session, workspace_id, members))
    written, expired = _expire(session, workspace_id, survivor, lots, now)
    if expired:
        balance = accounts.ledger_sum(session, workspace_id, members)
        _announce_expiry(session, workspace_id, survivor, expired, balance, now)
    account.next_expiry_at, account.updated_at = next_expiry(lots), now
    refresh_tier(session, account, members, now=now, config=config, source=EXPIRY_SOURCE)
    return written, expired


def _post(
    session: Session,
    workspace_id: str,
    profile_id: str,
    kind: str,
    points: int,
    reason: str,
    source: str,
    *,
    event_id: int | None = None,
    key: str | None = None,
    now: datetime | None,
    config: LoyaltyConfig,
    reward_id: str | None = None,
) -> Posted:
    reason, source = _text("reason", reason, 500), _text("source", source, 120)
    if key is not None:
        key = _text("idempotency_key", key, 255)
    now = now or utcnow()
    survivor = accounts.survivor_id(session, workspace_id, profile_id)
    account = accounts.lock_account(session, workspace_id, survivor, now)
    members = accounts.family(session, workspace_id, survivor)
    if key is not None:
        seen = _by_key(session, workspace_id, key)
        if seen is not None:
            if (seen.kind, seen.points, seen.reward_id) != (kind, points, reward_id) or (
                seen.profile_id not in members
            ):
                raise IdempotencyConflict(key, seen.id)
            balance = accounts.ledger_sum(session, workspace_id, members)
            return Posted(entry_view(seen), False, balance, account.tier)
    lines = accounts.lines(session, workspace_id, members)
    lots = replay(lines)
    _, expired = _expire(session, workspace_id, survivor, lots, now)
    # the ledger's sum, from the lines just read (and the expiries just written)
    balance = sum(line.points for line in lines) - expired
    if expired:
        _announce_expiry(session, workspace_id, survivor, expired, balance, now)
    if points < 0 and balance + points < 0:
        field = "reward" if reward_id else "points"
        raise InsufficientPoints(balance, -points, field)
    expires_at = expiry_for(now, config) if points > 0 else None
    entry_key = key or f"entry:{uuid7().hex}"
    row = {
        "workspace_id": workspace_id,
        "profile_id": survivor,
        "kind": kind,
        "points": points,
        "reason": reason,
        "source": source,
        "event_id": event_id,
        "idempotency_key": entry_key,
        "reward_id": reward_id,
        "expires_at": expires_at,
        "created_at": now,
    }
    new_id = session.execute(
        dialect_insert(session)(ENTRIES)
        .values(row)
        .on_conflict_do_nothing(index_elements=["workspace_id", "idempotency_key"])
        .returning(ENTRIES.c.id)
    ).scalar()
    if new_id is None:  # the key was taken meanwhile for another profile's entry
        taken = _by_key(session, workspace_id, entry_key)
        raise IdempotencyConflict(entry_key, taken.id if taken else 0)
    if points > 0:
        lots.append(Lot(int(new_id), points, points, expires_at))
    else:
        consume(lots, -points)
    account.next_expiry_at, account.updated_at = next_expiry(lots), now
    announced = points_changed(
        survivor,
        kind=kind,
        points=points,
        balance=balance + points,
        at=now,
        entry_id=int(new_id),
        reason=reason,
        source=source,
        event_id=event_id,
        reward_id=reward_id,
    )
    record_changes(session, workspace_id, [announced], now=now)
    change = refresh_tier(session, account, members, now=now, config=config, source=source)
    view = {
        "id": int(new_id),
        **{name: row[name] for name in ("profile_id", "kind", "points", "reason", "source")},
        **{name: row[name] for name in ("event_id", "reward_id")},
        "lot_id": None,
        "expires_at": expires_at.isoformat() if expires_at else None,
        "created_at": now.isoformat(),
    }
    return Posted(view, True, balance + points, account.tier, change, expired=expired)


def _expire(
    session: Session, workspace_id: str, survivor: str, lots: Sequence[Lot], now: datetime
) -> tuple[int, int]:
    """Write an ``expire`` entry for each due lot (updating ``lots``): (entries, points)."""
    written = points = 0
    for lot in due(lots, now):
        date = lot.expires_at.date().isoformat() if lot.expires_at else "?"
        inserted = session.execute(
            dialect_insert(session)(ENTRIES)
            .values(
                workspace_id=workspace_id,
                profile_id=survivor,
                kind=EXPIRE,
                points=-lot.remaining,
                reason=f"{lot.points} points earned in entry {lot.entry_id} expired on {date}",
                source=EXPIRY_SOURCE,
                idempotency_key=f"expire:{lot.entry_id}",
                lot_id=lot.entry_id,
                created_at=now,
            )
            .on_conflict_do_nothing(index_elements=["workspace_id", "idempotency_key"])
            .returning(ENTRIES.c.id)
        ).scalar()
        if inserted is not None:
            written, points = written + 1, points + lot.remaining
        lot.remaining = 0
    return written, points


def _announce_expiry(
    session: Session, workspace_id: str, survivor: str, points: int, balance: int, now: datetime
) -> None:
    """One ``loyalty.points_changed`` for the lots an expiry run took from an account."""
    announced = points_changed(
        survivor, kind=EXPIRE, points=-points, balance=balance, at=now, source=EXPIRY_SOURCE
    )
    record_changes(session, workspace_id, [announced], now=now)


def _by_key(session: Session, workspace_id: str, key: str) -> LoyaltyEntry | None:
    return session.scalars(
        select(LoyaltyEntry).where(
            LoyaltyEntry.workspace_id == workspace_id, LoyaltyEntry.idempotency_key == key
        )
    ).first()


def _positive(points: int) -> None:
    if not isinstance(points, int) or isinstance(points, bool) or points <= 0:
        raise ValidationError("points", "must be a whole number above 0")
    if points > MAX_POINTS:
        raise ValidationError("points", f"at most {MAX_POINTS} at once")


def _text(field: str, value: str, longest: int) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(field, "must not be empty")
    if len(value) > longest:
        raise ValidationError(field, f"at most {longest} characters")
    return value.strip()


__all__ = [
    "DEFAULT_CONFIG",
    "ExpiryRun",
    "Posted",
    "adjust",
    "award",
    "deduct",
    "entry_view",
    "expire_account",
    "expire_due",
    "recompute_tier",
    "redeem_reward",
    "set_tier",
]
