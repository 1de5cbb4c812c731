"""Unmerge across packages: identity splits the profile, then loyalty points follow events.

Why here: identity must not import personalization (dependencies point one way), yet an
unmerge that moves an order to another profile must move the points it earned. The API
route and the CLI both call :func:`unmerge_profile`, in one transaction: the split, the
recomputed profiles and the compensating ledger entries commit together or not at all.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from identity.unmerge import unmerge
from personalization.loyalty import LoyaltyConfig
from personalization.loyalty.moves import follow_events
from workers.runtime import Runtime


def unmerge_profile(
    runtime: Runtime,
    session: Session,
    workspace_id: str,
    profile_id: str,
    *,
    identifier: tuple[str, str] | None = None,
    source: str | None = None,
    reason: str | None = None,
    requested_by: str | None = None,
) -> dict[str, Any]:
    """The unmerge's answer, with ``loyalty``: the points that moved with their events."""
    result = unmerge(
        session,
        workspace_id,
        profile_id,
        identifier=identifier,
        source=source,
        reason=reason,
        requested_by=requested_by,
        config=runtime.identity,
    )
    moves = follow_events(
        session,
        workspace_id,
        [part["id"] for part in result["profiles"]] + list(result["redirected"]),
        split_id=result["split_id"],
        config=LoyaltyConfig.load(runtime.settings.loyalty_config),
    )
    return {**result, "loyalty": moves.view()}


__all__ = ["unmerge_profile"]
