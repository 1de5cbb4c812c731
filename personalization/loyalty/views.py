"""Reading the ledger: a profile's balance, tier, history page and what it can redeem."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from personalization.loyalty import accounts
from personalization.loyalty.config import LoyaltyConfig
from personalization.loyalty.ledger import DEFAULT_CONFIG, entry_view
from personalization.loyalty.models import LoyaltyAccount, LoyaltyEntry
from personalization.loyalty.policy import next_expiry, next_tier, replay
from personalization.loyalty.tiers import measure
from pipeline.envelope import utcnow


def balance(session: Session, workspace_id: str, profile_id: str) -> int:
    """The profile's points: the sum of its ledger (a merged-away id: its survivor's)."""
    survivor = accounts.survivor_id(session, workspace_id, profile_id)
    members = accounts.family(session, workspace_id, survivor)
    return accounts.ledger_sum(session, workspace_id, members)


def balances_and_tiers(
    session: Session, workspace_id: str, survivors: Collection[str]
) -> dict[str, dict[str, Any]]:
    """``{"balance", "tier"}`` of many live profiles in three queries (rules, per batch)."""
    owner = accounts.families(session, workspace_id, survivors)
    found: dict[str, dict[str, Any]] = {p: {"balance": 0, "tier": None} for p in survivors}
    members = sorted(owner)
    for start in range(0, len(members), 400):
        part = members[start : start + 400]
        rows = session.execute(
            select(LoyaltyEntry.profile_id, func.sum(LoyaltyEntry.points))
            .where(LoyaltyEntry.workspace_id == workspace_id, LoyaltyEntry.profile_id.in_(part))
            .group_by(LoyaltyEntry.profile_id)
        )
        for member, points in rows:
            found[owner[member]]["balance"] += int(points or 0)
        for account in session.scalars(
            select(LoyaltyAccount).where(
                LoyaltyAccount.workspace_id == workspace_id,
                LoyaltyAccount.profile_id.in_([p for p in part if p in found]),
            )
        ):
            found[account.profile_id]["tier"] = account.tier
    return found


def tier(session: Session, workspace_id: str, profile_id: str) -> str | None:
    """The tier held now (as of the last ledger change or expiry run)."""
    survivor = accounts.survivor_id(session, workspace_id, profile_id)
    account = accounts.get_account(session, workspace_id, survivor)
    return account.tier if account else None


def history(
    session: Session,
    workspace_id: str,
    profile_id: str,
    *,
    limit: int = 50,
    before: int | None = None,
) -> tuple[list[dict[str, Any]], int | None]:
    """Entries newest first and the ``before`` cursor of the next page (``None``: no more)."""
    survivor = accounts.survivor_id(session, workspace_id, profile_id)
    members = accounts.family(session, workspace_id, survivor)
    query = select(LoyaltyEntry).where(
        LoyaltyEntry.workspace_id == workspace_id, LoyaltyEntry.profile_id.in_(members)
    )
    if before is not None:
        query = query.where(LoyaltyEntry.id < before)
    page = list(session.scalars(query.order_by(LoyaltyEntry.id.desc()).limit(limit)))
    cursor = page[-1].id if len(page) == limit else None
    return [entry_view(entry) for entry in page], cursor


def brief(session: Session, workspace_id: str, profile_id: str) -> dict[str, Any]:
    """Points and tier for the profile's own JSON (``{"balance": 0, "tier": null}`` if none)."""
    survivor = accounts.survivor_id(session, workspace_id, profile_id)
    members = accounts.family(session, workspace_id, survivor)
    account = accounts.get_account(session, workspace_id, survivor)
    return {
        "balance": accounts.ledger_sum(session, workspace_id, members),
        "tier": account.tier if account else None,
    }


def summary(
    session: Session,
    workspace_id: str,
    profile_id: str,
    *,
    config: LoyaltyConfig = DEFAULT_CONFIG,
    limit: int = 50,
    before: int | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Everything ``GET /v1/profiles/{id}/loyalty`` shows."""
    now = now or utcnow()
    survivor = accounts.survivor_id(session, workspace_id, profile_id)
    members = accounts.family(session, workspace_id, survivor)
    account = accounts.get_account(session, workspace_id, survivor)
    points = accounts.ledger_sum(session, workspace_id, members)
    lots = replay(accounts.lines(session, workspace_id, members))
    soonest = next_expiry(lots)
    value = measure(session, workspace_id, members, now, config)
    upcoming = next_tier(value, config.tiers)
    entries, cursor = history(session, workspace_id, survivor, limit=limit, before=before)
    view: dict[str, Any] = {
        "profile_id": survivor,
        "balance": points,
        "tier": account.tier if account else None,
        "tier_since": account.tier_since.isoformat() if account and account.tier_since else None,
        "tier_floor": account.tier_floor if account else None,
        "tier_measure": {
            "kind": config.tier_measure,
            "value": value,
            "window_days": config.tier_window_days,
        },
        "next_tier": {"name": upcoming[0], "needs": upcoming[1]} if upcoming else None,
        "next_expiry": {
            "at": soonest.isoformat(),
            "points": sum(lot.remaining for lot in lots if lot.expires_at == soonest),
        }
        if soonest
        else None,
        "rewards": [
            {
                "id": reward.id,
                "name": reward.name,
                "points": reward.points,
                "available": reward.points <= points,
            }
            for reward in config.rewards
        ],
        "entries": entries,
        "next_before": cursor,
    }
    if survivor != profile_id:
        view["requested_id"] = profile_id
    return view


__all__ = ["balance", "brief", "history", "summary", "tier"]
