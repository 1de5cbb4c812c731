"""Shared steps of every ledger change: whose points, the lock, the entries to replay.

Why a "family": a profile merged into another keeps its id on the entries written before
the merge. The person's ledger is the entries of the surviving profile and of every
profile merged into it; new entries always go to the survivor.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from identity.models import Profile
from identity.views import merged_members
from personalization.loyalty.errors import ProfileNotFound
from personalization.loyalty.models import ACCOUNTS, LoyaltyAccount, LoyaltyEntry
from personalization.loyalty.policy import Line
from pipeline.db import dialect_insert

_MAX_DEPTH = 16


def survivor_id(session: Session, workspace_id: str, profile_id: str) -> str:
    """The profile that holds ``profile_id``'s points now (following merges).

    Reads only ids (not the profile's traits, as ``identity.views.current_profile`` does):
    every ledger change and read starts here.
    """
    for _ in range(_MAX_DEPTH):
        row = session.execute(
            select(Profile.merged_into).where(
                Profile.workspace_id == workspace_id, Profile.id == profile_id
            )
        ).first()
        if row is None:
            raise ProfileNotFound(profile_id)
        if row.merged_into is None:
            return profile_id
        profile_id = row.merged_into
    raise ProfileNotFound(profile_id)


def family(session: Session, workspace_id: str, survivor: str) -> list[str]:
    """The survivor and every profile merged into it, directly or not."""
    return sorted(families(session, workspace_id, [survivor]))


def families(session: Session, workspace_id: str, survivors: Collection[str]) -> dict[str, str]:
    """Every profile merged (directly or not) into one of ``survivors``: member -> survivor."""
    return merged_members(session, workspace_id, survivors, max_depth=_MAX_DEPTH)


def lock_account(
    session: Session, workspace_id: str, profile_id: str, now: datetime
) -> LoyaltyAccount:
    """The profile's account row (created when missing), locked until the transaction ends.

    PostgreSQL: ``FOR UPDATE`` makes a concurrent change of the same profile wait for this
    one to commit, then read the ledger afresh. SQLite: write transactions already run one
    at a time (``BEGIN IMMEDIATE``).
    """
    session.execute(
        dialect_insert(session)(ACCOUNTS)
        .values(workspace_id=workspace_id, profile_id=profile_id, updated_at=now)
        .on_conflict_do_nothing(index_elements=["workspace_id", "profile_id"])
    )
    query = select(LoyaltyAccount).where(
        LoyaltyAccount.workspace_id == workspace_id, LoyaltyAccount.profile_id == profile_id
    )
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update()
    return session.scalars(query.execution_options(populate_existing=True)).one()


def lines(session: Session, workspace_id: str, profiles: Collection[str]) -> list[Line]:
    """The entries of these profiles, oldest first, as the replay needs them."""
    e = LoyaltyEntry
    rows = session.execute(
        select(e.id, e.kind, e.points, e.expires_at, e.lot_id)
        .where(e.workspace_id == workspace_id, e.profile_id.in_(sorted(profiles)))
        .order_by(e.id)
    )
    return [Line(row.id, row.kind, row.points, row.expires_at, row.lot_id) for row in rows]


def ledger_sum(session: Session, workspace_id: str, profiles: Collection[str]) -> int:
    """The balance: the sum of the entries' points."""
    total = session.scalar(
        select(func.coalesce(func.sum(LoyaltyEntry.points), 0)).where(
            LoyaltyEntry.workspace_id == workspace_id,
            LoyaltyEntry.profile_id.in_(sorted(profiles)),
        )
    )
    return int(total or 0)


def get_account(session: Session, workspace_id: str, profile_id: str) -> LoyaltyAccount | None:
    return session.get(LoyaltyAccount, (workspace_id, profile_id))
