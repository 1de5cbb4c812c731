"""Tables of the loyalty programme: the append-only ledger and one account row per profile.

Why the balance is not stored: it is the sum of the ledger (one indexed aggregate), so
nothing can make a cached copy disagree with it. The account row holds what is not a sum:
the current tier (so it is queryable and a change is noticed), a tier floor set by hand or
by a rule, and when the next lot expires (the scheduler finds due profiles by index). It is
also the lock: every ledger change locks its profile's account row first (``SELECT … FOR
UPDATE`` on PostgreSQL; SQLite's write transactions are serial), so two redemptions of the
last points cannot both pass the balance check.
"""

from __future__ import annotations

from datetime import datetime
from typing import cast

from sqlalchemy import (
    BigInteger,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from pipeline.db import Base, BigId, UTCDateTime


class LoyaltyEntry(Base):
    """One change of a profile's points: never updated, never deleted."""

    __tablename__ = "loyalty_entries"
    __table_args__ = (
        UniqueConstraint("workspace_id", "idempotency_key", name="uq_loyalty_entries_idempotency"),
        # kind, time and points too: a batch sums balances from the index alone (0017)
        Index(
            "ix_loyalty_entries_profile",
            "workspace_id",
            "profile_id",
            "id",
            "kind",
            "created_at",
            "points",
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    workspace_id: Mapped[str] = mapped_column(String(63), ForeignKey("workspaces.id"))
    #: the profile the entry was written to (the survivor at that time)
    profile_id: Mapped[str] = mapped_column(String(40))
    #: ``earn``, ``redeem``, ``expire`` or ``adjust``
    kind: Mapped[str] = mapped_column(String(16))
    #: signed: credits positive, debits negative
    points: Mapped[int] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(String(500))
    #: who: ``rule:{id}@{version}``, ``api``, ``cli``, ``expiry``
    source: Mapped[str] = mapped_column(String(120))
    #: the event log id of the event that caused it, when one did
    event_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    idempotency_key: Mapped[str] = mapped_column(String(255))
    #: an ``expire`` entry: the credit (entry id) whose rest it expires
    lot_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    #: a reward's redemption: the reward's id in the catalogue
    reward_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    #: a credit: when what is left of it expires (``None``: never)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class LoyaltyAccount(Base):
    """A profile's tier and next expiry; the row its ledger changes lock."""

    __tablename__ = "loyalty_accounts"
    __table_args__ = (Index("ix_loyalty_accounts_expiry", "workspace_id", "next_expiry_at"),)

    workspace_id: Mapped[str] = mapped_column(
        String(63), ForeignKey("workspaces.id"), primary_key=True
    )
    profile_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tier: Mapped[str | None] = mapped_column(String(64), nullable=True)
    tier_since: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    #: never below this tier (``set_tier``); ``None``: the computed tier alone
    tier_floor: Mapped[str | None] = mapped_column(String(64), nullable=True)
    next_expiry_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


ENTRIES = cast(Table, LoyaltyEntry.__table__)
ACCOUNTS = cast(Table, LoyaltyAccount.__table__)

__all__ = ["ACCOUNTS", "ENTRIES", "LoyaltyAccount", "LoyaltyEntry"]
